#!/usr/bin/env bash
# Build a local Debian 12 + Python 3.11 base image with debootstrap, for machines that cannot
# pull from a registry. Usage: scripts/build-base-image.sh [IMAGE] (default flame-base:bookworm).
# Skips the build when the image already exists with nginx (the gateway service) and
# redis-server (each region's history store) in it; rebuilds an older one that lacks either.
set -euo pipefail
image=${1:-flame-base:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
  if docker run --rm "$image" sh -c 'command -v nginx && command -v redis-server' >/dev/null 2>&1; then
    echo "build-base-image: $image exists"; exit 0
  fi
  echo "build-base-image: $image lacks nginx or redis-server (an older Flame's base image): rebuilding"
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "build-base-image: debootstrap bookworm into $root (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,nginx,redis-server \
  bookworm "$root" http://deb.debian.org/debian >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "build-base-image: built $image"
