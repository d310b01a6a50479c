#!/usr/bin/env bash
# Install and start a Docker engine (with Compose v2 and buildx) on Debian 12/13, as root.
# Idempotent: does nothing that is already done. Used by .ci/run; see README "Offline build".
set -euo pipefail
log() { echo "install-docker: $*"; }

if ! docker compose version >/dev/null 2>&1 || ! command -v dockerd >/dev/null \
   || ! command -v debootstrap >/dev/null || ! docker buildx version >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { log "run as root (needs apt-get)"; exit 1; }
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    # Debian 12's docker.io lacks Compose v2: take the packages from trixie, pinned low
    cat > /etc/apt/sources.list.d/flame-trixie.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
      > /etc/apt/preferences.d/flame-trixie
    target=(-t trixie)
  else
    target=()
  fi
  log "installing docker.io, docker-compose, docker-buildx, debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" \
    docker.io docker-compose docker-buildx debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; exit 1; }
log "ready: $(docker --version); $(docker compose version)"
