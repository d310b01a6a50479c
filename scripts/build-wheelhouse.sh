#!/usr/bin/env bash
# Download/build every wheel the Flame image needs into ./wheelhouse, for an offline
# (--no-index) image build. Run on a host that can reach the package index, with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mkdir -p wheelhouse
echo "build-wheelhouse: torch 2.13.0 (CPU) and Flame's dependencies pinned by constraints.txt"
# torch is pinned in the same resolve: unpinned, pip may take a newer multi-GB CUDA build
log=$(mktemp)
if ! "$python" -m pip wheel --quiet --wheel-dir wheelhouse -c constraints.txt \
  torch==2.13.0 setuptools wheel . > "$log" 2>&1; then
  grep -v "^WARNING: Location" "$log" >&2 || true
  echo "build-wheelhouse: pip wheel failed (python: $python); the wheelhouse is incomplete" >&2
  exit 1
fi
grep -v "^WARNING: Location" "$log" || true
# The offline base image's Python is Debian 12's 3.11.2: redis needs async-timeout below
# 3.11.3, which a resolve on a newer host Python leaves out
if ! "$python" -m pip wheel --quiet --no-deps --wheel-dir wheelhouse -c constraints.txt \
  async-timeout > "$log" 2>&1; then
  cat "$log" >&2
  echo "build-wheelhouse: pip wheel async-timeout failed; the wheelhouse is incomplete" >&2
  exit 1
fi
if ! compgen -G 'wheelhouse/torch-2.13.0*.whl' >/dev/null; then
  echo "build-wheelhouse: no torch 2.13.0 wheel in wheelhouse/" >&2
  exit 1
fi
if compgen -G 'wheelhouse/nvidia_*' >/dev/null; then
  echo "build-wheelhouse: CUDA wheels found in wheelhouse/; remove them and check the torch pin" >&2
  exit 1
fi
rm -f wheelhouse/flame-*.whl
echo "build-wheelhouse: $(ls wheelhouse/*.whl | wc -l) wheels, $(du -sh wheelhouse | cut -f1)"
