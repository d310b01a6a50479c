#!/usr/bin/env bash
# The README's multi-host path, on one machine: a coordinator stack with one local region and its
# gateway published on 0.0.0.0, and the `eu` site as a separate compose project
# (docker-compose.region.yml) that holds only its own ca.crt and node key and dials the
# coordinator's public port host.docker.internal:9443 (TLS, node authentication, Fleet API only).
# The launcher then trains over both; exit 0 only if the run finished with both regions' metrics.
# Needs the flame:latest image (scripts/compose-e2e.sh builds it) and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
hub=${FLAME_MH_PROJECT:-flame-mh}
site=$hub-eu
site_dir=$(mktemp -d)
log() { echo "multihost-e2e: $*"; }
hub_compose() { docker compose -p "$hub" "$@"; }
site_compose() {
  docker compose -p "$site" --project-directory "$site_dir" -f docker-compose.region.yml "$@"
}

docker image inspect flame:latest >/dev/null 2>&1 \
  || { log "no flame:latest image: run scripts/compose-e2e.sh (or docker compose build)" >&2; exit 2; }
cleanup() {
  { hub_compose logs --no-color; site_compose logs --no-color; } \
    > "${FLAME_MH_LOG:-/tmp/flame-multihost.log}" 2>&1 || true
  site_compose down -v --remove-orphans >/dev/null 2>&1 || true
  hub_compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$site_dir"
}
trap cleanup EXIT
site_compose down -v >/dev/null 2>&1 || true
hub_compose down -v >/dev/null 2>&1 || true

t0=$(date +%s)
# the coordinator: everything but the eu region; only the gateway's port leaves the host
FLAME_GATEWAY_BIND=0.0.0.0 hub_compose up -d --no-build --wait \
  mlflow superlink gateway serverapp us-client > "$site_dir/up.log" 2>&1 \
  || { tail -20 "$site_dir/up.log"; exit 1; }
# the site receives only its own files (README: Multi-host)
mkdir -p "$site_dir/certs" "$site_dir/data"
docker cp "$(hub_compose ps -a -q certs)":/certs/eu "$site_dir/certs/eu"
chown -R 10001 "$site_dir/certs/eu"
printf 'FLAME_REGION=eu\nFLAME_SUPERLINK=host.docker.internal:9443\n' > "$site_dir/.env"
site_compose up -d --no-build --wait >> "$site_dir/up.log" 2>&1 || { tail -20 "$site_dir/up.log"; exit 1; }
t1=$(date +%s)
log "coordinator and site up in $((t1 - t0)) s; the site dials host.docker.internal:9443"
code=0
hub_compose run --rm --no-deps launcher > "$site_dir/launcher.log" 2>&1 || code=$?
t2=$(date +%s)
grep -E "flame: (round|Run|Saved)" "$site_dir/launcher.log" || true
log "launcher exit code $code; run $((t2 - t1)) s"
[ "$code" = 0 ] || { tail -40 "$site_dir/launcher.log"; exit 1; }
"$python" scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000
site_compose logs --no-color region > "$site_dir/site.log" 2>&1
grep -q "eu round 1 train" "$site_dir/site.log" \
  || { log "the site's log shows no training round" >&2; exit 1; }
log "passed: the eu site trained through the gateway with TLS and its own key"
