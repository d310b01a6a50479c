#!/usr/bin/env bash
# End-to-end test of the compose deployment through the offline path, in one command:
# local base image (built only if missing) + wheelhouse -> image -> `compose up` -> wait for the
# launcher -> check through MLflow's REST API that the run finished with every round's server
# metrics and both regions' client metrics -> check from the host that the public gateway port
# refuses `flwr run` (scripts/verify_gateway.py) -> the scoring service serves the registered
# champion (scripts/verify_scorer.py) -> `compose down -v`.
# Needs a running Docker engine (scripts/install-docker.sh). Exit 0 only if all metrics are in.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
project=${FLAME_E2E_PROJECT:-flame-e2e}
export FLAME_BASE_IMAGE=${FLAME_BASE_IMAGE:-flame-base:bookworm}
export FLAME_PIP_SOURCE=wheelhouse
log() { echo "compose-e2e: $*"; }

if ! docker info >/dev/null 2>&1; then
  log "no Docker engine is reachable ('docker info' failed)." >&2
  log "start one with: sudo scripts/install-docker.sh" >&2
  exit 2
fi
compose() { docker compose -p "$project" "$@"; }
if ! "$python" -c "import flame" 2>/dev/null; then
  log "$python cannot import flame: run 'make setup' first (or set PYTHON)" >&2
  exit 2
fi

t0=$(date +%s)
scripts/build-base-image.sh "$FLAME_BASE_IMAGE"
stamp=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat wheelhouse/.stamp 2>/dev/null)" != "$stamp" ]; then
  rm -f wheelhouse/*.whl
  PYTHON=$python scripts/build-wheelhouse.sh
  echo "$stamp" > wheelhouse/.stamp
fi
t1=$(date +%s)
compose build
t2=$(date +%s)
log "image $(docker image inspect flame:latest --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}'), build $((t2 - t1)) s"

trap 'compose logs --no-color > "${FLAME_E2E_LOG:-/tmp/flame-e2e.log}" 2>&1; compose --profile serve down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
compose --profile serve down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d
compose wait launcher >/dev/null || true
t3=$(date +%s)
code=$(docker inspect "$(compose ps -a -q launcher)" --format '{{.State.ExitCode}}')
compose logs --no-color launcher | grep -E "flame: (round|Run|Saved)" || true
log "launcher exit code $code; up -> finished run $((t3 - t2)) s"
[ "$code" = 0 ] || { log "the federated run failed; full logs: ${FLAME_E2E_LOG:-/tmp/flame-e2e.log}"; exit 1; }
"$python" scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000
# regions joined through the gateway; from this host, the public port must refuse `flwr run`
ca=$(mktemp -d)/ca.crt
docker cp "$(compose ps -a -q certs)":/certs/authority/ca.crt "$ca" >/dev/null
"$python" scripts/verify_gateway.py --ca "$ca"
# the scoring service (profile serve) serves the run's registered champion from the host
compose --profile serve up -d --wait scorer
"$python" scripts/verify_scorer.py --url http://127.0.0.1:8080 --version 1
log "passed (setup $((t1 - t0)) s, build $((t2 - t1)) s, run $((t3 - t2)) s)"
