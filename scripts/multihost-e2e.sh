#!/usr/bin/env bash
# The README's multi-host path, on one machine: a coordinator stack with one local region and its
# gateway published on 0.0.0.0, and the `eu` site as a separate compose project
# (docker-compose.region.yml) that makes its own node key (only its node.pub goes to the
# coordinator, which registers it), holds only the CA's certificate besides, and dials the
# coordinator's public port host.docker.internal:9443 (TLS, node authentication, Fleet API only).
# The launcher then trains over both; exit 0 only if the run finished with both regions' metrics.
# Both regions run the compose default policy (DP required, ε and δ caps, privatized evaluation)
# and the default run is a DP run they accept. Then, on the same stack:
# - the site's container is re-created: its state volume (secret, privacy ledger) survives;
# - a second remote site holding the CA and a valid key that was never registered is refused;
# - a longer run is killed mid-run (the ServerApp and SuperLink containers), the stack is brought
#   back up and the run resumed with the README's command (FLAME_RESUME=true docker compose run
#   --rm launcher); MLflow must then hold every round exactly once, and the site's ledger the
#   three runs (the first, the killed one, the resumed one: a new Flower run id). The ServerApp
#   resumes no DP run, so this one is a non-DP run on regions that opt out of the DP policy.
# Needs the flame:latest image (scripts/compose-e2e.sh builds it) and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
hub=${FLAME_MH_PROJECT:-flame-mh}
site=$hub-eu
intruder=$hub-intruder
site_dir=$(mktemp -d)
intruder_dir=$site_dir/intruder
log() { echo "multihost-e2e: $*"; }
hub_compose() { docker compose -p "$hub" "$@"; }
# MLflow answers only logins: the host-side checks read with flame-reader's, copied from its
# volume into this script's environment (never a command line or the log)
reader_login() {
  local dir; dir=$(mktemp -d)
  docker cp "$(hub_compose ps -a -q mlflow-accounts)":/secrets/mlflow-reader/credentials "$dir/c" >/dev/null
  MLFLOW_TRACKING_USERNAME=$(sed -n 's/^mlflow_tracking_username = //p' "$dir/c")
  MLFLOW_TRACKING_PASSWORD=$(sed -n 's/^mlflow_tracking_password = //p' "$dir/c")
  export MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
  rm -rf "$dir"
}
site_compose() {
  docker compose -p "$site" --project-directory "$site_dir" -f docker-compose.region.yml "$@"
}
intruder_compose() {
  docker compose -p "$intruder" --project-directory "$intruder_dir" -f docker-compose.region.yml "$@"
}
fail() { log "FAILED: $*" >&2; exit 1; }

docker image inspect flame:latest >/dev/null 2>&1 \
  || { log "no flame:latest image: run scripts/compose-e2e.sh (or docker compose build)" >&2; exit 2; }
cleanup() {
  { hub_compose logs --no-color; site_compose logs --no-color; intruder_compose logs --no-color; } \
    > "${FLAME_MH_LOG:-/tmp/flame-multihost.log}" 2>&1 || true
  intruder_compose down -v --remove-orphans >/dev/null 2>&1 || true
  site_compose down -v --remove-orphans >/dev/null 2>&1 || true
  hub_compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$site_dir"
}
trap cleanup EXIT
mkdir -p "$intruder_dir"
intruder_compose down -v >/dev/null 2>&1 || true
site_compose down -v >/dev/null 2>&1 || true
hub_compose down -v >/dev/null 2>&1 || true

t0=$(date +%s)
# the coordinator: everything but the eu region; only the gateway's port leaves the host
FLAME_GATEWAY_BIND=0.0.0.0 hub_compose up -d --no-build --wait \
  mlflow superlink gateway serverapp us-client > "$site_dir/up.log" 2>&1 \
  || { tail -20 "$site_dir/up.log"; exit 1; }
# keys are made where they are used (README: Multi-host): the site receives only the CA's
# certificate, makes its own key pair in its own volume and sends out only node.pub, which
# the coordinator registers; no coordinator volume ever holds the site's private key
mkdir -p "$site_dir/certs" "$site_dir/data" "$site_dir/outbox"
docker cp "$(hub_compose ps -a -q certs)":/certs/client/ca.crt "$site_dir/certs/ca.crt"
printf 'FLAME_REGION=eu\nFLAME_SUPERLINK=host.docker.internal:9443\n' > "$site_dir/.env"
site_compose run --rm --no-deps -T region \
  sh -c 'flame keygen --out /keys >&2 && cat /keys/node.pub' > "$site_dir/outbox/eu.pub" \
  2>> "$site_dir/up.log" || { tail -20 "$site_dir/up.log"; fail "the site could not make its key"; }
grep -q "^ecdsa-sha2-nistp384 " "$site_dir/outbox/eu.pub" || fail "the site's node.pub is not a public key"
hub_compose run --rm --no-deps -v "$site_dir/outbox:/incoming:ro" register flame register \
  --superlink superlink:8000 --keys /incoming --root-certificates /certs/ca.crt \
  >> "$site_dir/up.log" 2>&1 || { tail -20 "$site_dir/up.log"; fail "registering the site's key failed"; }
for volume in $(docker volume ls -q --filter "label=com.docker.compose.project=$hub"); do
  case "$volume" in  # the local us region's own key folder aside, no private key at all
    *_region-keys) check='! test -e /v/eu/node.key' ;;
    *) check='! grep -rlqs "OPENSSH PRIVATE KEY" /v' ;;
  esac
  docker run --rm --network none -v "$volume:/v:ro" flame:latest sh -c "$check" \
    || fail "the coordinator's volume $volume holds a site's private key"
done
log "passed: the site made its own key; no coordinator volume holds it"
site_compose up -d --no-build --wait >> "$site_dir/up.log" 2>&1 || { tail -20 "$site_dir/up.log"; exit 1; }
t1=$(date +%s)
log "coordinator and site up in $((t1 - t0)) s; the site dials host.docker.internal:9443"
code=0
hub_compose run --rm --no-deps launcher > "$site_dir/launcher.log" 2>&1 || code=$?
t2=$(date +%s)
grep -E "flame: (round|Run|Saved)" "$site_dir/launcher.log" || true
log "launcher exit code $code; run $((t2 - t1)) s"
[ "$code" = 0 ] || { tail -40 "$site_dir/launcher.log"; exit 1; }
reader_login
# a DP run (the default), each region's ε every round within the site's cap
cap=$(site_compose config --format json | "$python" -c \
  'import json, sys; print(json.load(sys.stdin)["services"]["region"]["environment"]["FLAME_POLICY_MAX_EPSILON"])')
"$python" scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000 --dp --max-epsilon "$cap"
site_compose logs --no-color region > "$site_dir/site.log" 2>&1
grep -q "eu round 1 train" "$site_dir/site.log" \
  || { log "the site's log shows no training round" >&2; exit 1; }
log "passed: the eu site trained through the gateway with TLS and its own key"

# the site's private state is its own volume: re-creating its container keeps the secret and
# the ledger (1 run so far)
site_state() { site_compose exec -T region sh -c 'sha256sum /state/eu/secret && flame ledger'; }
before=$(site_state) || { echo "$before"; fail "no state in the site's container"; }
echo "$before"
echo "$before" | grep -qE "^region eu \(.*\): 1 runs, " || fail "the site's ledger does not hold 1 run"
site_compose up -d --no-build --wait --force-recreate >> "$site_dir/up.log" 2>&1 \
  || { tail -20 "$site_dir/up.log"; exit 1; }
after=$(site_state) || { echo "$after"; fail "no state in the re-created site container"; }
[ "$before" = "$after" ] || { echo "$after"; fail "the site's secret or ledger changed on re-creation"; }
log "passed: the site's state volume survived its container's re-creation (same secret, same ledger)"

# a site with the federation's CA and a well-formed key that was never registered: refused
# (it makes its own key pair on start, like any site, and nobody registers it)
mkdir -p "$intruder_dir/certs"
cp "$site_dir/certs/ca.crt" "$intruder_dir/certs/ca.crt"
cp "$site_dir/.env" "$intruder_dir/.env"
intruder_compose up -d --no-build >> "$site_dir/up.log" 2>&1 || { tail -20 "$site_dir/up.log"; exit 1; }
for _ in $(seq 120); do
  intruder_compose logs --no-color region 2>&1 | grep -q "Failed to activate SuperNode" && break
  sleep 1
done
intruder_compose logs --no-color region > "$site_dir/intruder.log" 2>&1
grep -q "Failed to activate SuperNode" "$site_dir/intruder.log" \
  || { tail -20 "$site_dir/intruder.log"; fail "the unregistered key was not refused in 120 s"; }
! grep -q "round [0-9]* train" "$site_dir/intruder.log" || fail "the unregistered site trained"
intruder_compose down -v >/dev/null 2>&1
log "passed: a site with an unregistered key is refused (Failed to activate SuperNode)"

# kill the ServerApp and SuperLink containers mid-run, bring them back, resume (README command)
rounds=8  # the run is still going when the kill comes
# The ServerApp refuses FLAME_RESUME with FLAME_DP (flame/fl/checkpoint.py), so this run is a
# non-DP run: the coordinator's ServerApp and both regions opt out of the DP policy here, as a
# site's .env may (the ledgers still record it, at ε=inf). Same settings for every `up` below.
opt_out=(FLAME_DP=false FLAME_POLICY_REQUIRE_DP=false FLAME_POLICY_MAX_EPSILON=0
         FLAME_POLICY_LIFETIME_EPSILON=0)
printf '%s\n' "${opt_out[@]:1}" >> "$site_dir/.env"
site_compose up -d --no-build --wait >> "$site_dir/up.log" 2>&1 || { tail -20 "$site_dir/up.log"; exit 1; }
hub_up() {
  env "${opt_out[@]}" FLAME_GATEWAY_BIND=0.0.0.0 docker compose -p "$hub" up -d --no-build --wait \
    mlflow superlink gateway serverapp us-client >> "$site_dir/up.log" 2>&1 \
    || { tail -20 "$site_dir/up.log"; exit 1; }
}
hub_up
# the launcher submits the run config (FLAME_DP among it): it gets the opt-out too
launch() {
  env "${opt_out[@]}" docker compose -p "$hub" run --rm --no-deps \
    -e FLAME_NUM_SERVER_ROUNDS=$rounds launcher
}
launch > "$site_dir/killed.log" 2>&1 &
first=$!
for _ in $(seq 600); do
  grep -q "round 2 | server test" "$site_dir/killed.log" && break
  kill -0 $first 2>/dev/null || break
  sleep 0.5
done
grep -q "round 2 | server test" "$site_dir/killed.log" || { tail -30 "$site_dir/killed.log"; fail "no round 2"; }
docker kill "$(hub_compose ps -q serverapp)" "$(hub_compose ps -q superlink)" >/dev/null
log "killed the ServerApp and SuperLink containers after round 2 of $rounds"
if wait $first; then fail "the launcher exited 0 although its run was killed"; fi
# the same `up` as before the run (same settings, so no service is recreated): starts the two
hub_up
code=0
FLAME_RESUME=true launch > "$site_dir/resumed.log" 2>&1 || code=$?
grep -E "Resuming|flame: (round|Run|Saved)" "$site_dir/resumed.log" || true
[ "$code" = 0 ] || { tail -40 "$site_dir/resumed.log"; fail "the resumed run failed"; }
grep -q "Resuming" "$site_dir/resumed.log" || fail "the run was not resumed"
# not DP, but the regions still privatize their evaluation answers (FLAME_POLICY_EVAL_NOISE)
"$python" scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000 --rounds $rounds \
  --private-evaluation
log "passed: killed after round 2, resumed, every round in MLflow once"
# the site's ledger: the first run, the killed one and the resumed one (a new Flower run id)
ledger=$(site_compose exec -T region flame ledger) || { echo "$ledger"; fail "flame ledger failed"; }
echo "$ledger"
runs=$(echo "$ledger" | grep -cE '^  [0-9]+ ' || true)
echo "$ledger" | grep -qE "^region eu \(.*\): 3 runs, " && [ "$runs" = 3 ] \
  || fail "the site's ledger shows $runs run lines, not 3"
log "passed: the site's ledger holds all 3 runs"
