#!/usr/bin/env bash
# Install Debian's redis-server (the tests start their own on a free port; nothing is left
# running). Idempotent; needs root for apt-get. Used by `make test`.
set -euo pipefail
command -v redis-server >/dev/null && exit 0
[ "$(id -u)" = 0 ] || { echo "install-redis: redis-server is missing; run as root (apt-get) or install it" >&2; exit 1; }
echo "install-redis: installing Debian's redis-server"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# the package may start a system instance; the tests never use it
(service redis-server stop || pkill -x redis-server || true) >/dev/null 2>&1
command -v redis-server >/dev/null
