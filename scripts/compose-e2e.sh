#!/usr/bin/env bash
# End-to-end test of the compose deployment through the offline path, in one command:
# local base image (built only if missing) + wheelhouse -> image -> `compose up` -> wait for the
# launcher -> check through MLflow's REST API that the run finished with every round's server
# metrics and both regions' client metrics, and that it is a DP run (the default: the regions
# refuse any other) with each region's ε every round within their cap -> check from the host
# that the public gateway port refuses `flwr run` (scripts/verify_gateway.py) -> the network
# and limit boundaries (scripts/verify_boundaries.py) -> no coordinator volume holds a region's
# private key -> a rogue AgentApp-only FAB runs on no region, and an install folder planted in
# each region container is loaded by no run (scripts/verify_approval.py) -> a second run
# (`docker compose run --rm launcher`), checked the same way -> each region's privacy ledger
# (`flame ledger` in its container) holds exactly the two runs -> each region's own scorer
# serves the registered champion (version 1 or 2) on rows streamed one per request, with their
# history in the region's Redis, matching `flame score` on the whole file to 1e-6 across a
# restart of the scorer; only its scorer reaches a region's Redis
# (scripts/verify_region_scorer.py) -> `compose down -v`.
# Needs a running Docker engine (scripts/install-docker.sh). Exit 0 only if all of that holds.
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
# MLflow answers only logins: the host-side checks read with flame-reader's, copied from its
# volume into this script's environment (never a command line or the log)
reader_login() {
  local dir; dir=$(mktemp -d)
  docker cp "$(compose ps -a -q mlflow-accounts)":/secrets/mlflow-reader/credentials "$dir/c" >/dev/null
  MLFLOW_TRACKING_USERNAME=$(sed -n 's/^mlflow_tracking_username = //p' "$dir/c")
  MLFLOW_TRACKING_PASSWORD=$(sed -n 's/^mlflow_tracking_password = //p' "$dir/c")
  export MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
  rm -rf "$dir"
}
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

trap 'compose logs --no-color > "${FLAME_E2E_LOG:-/tmp/flame-e2e.log}" 2>&1; compose down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d
compose wait launcher >/dev/null || true
t3=$(date +%s)
code=$(docker inspect "$(compose ps -a -q launcher)" --format '{{.State.ExitCode}}')
compose logs --no-color launcher | grep -E "flame: (round|Run|Saved)" || true
log "launcher exit code $code; up -> finished run $((t3 - t2)) s"
[ "$code" = 0 ] || { log "the federated run failed; full logs: ${FLAME_E2E_LOG:-/tmp/flame-e2e.log}"; exit 1; }
reader_login
# the default run is a DP run; each region reports its ε every round, within its policy's cap
# (the compose regions' FLAME_POLICY_MAX_EPSILON default, unless .env sets one)
cap=$(compose config --format json | "$python" -c \
  'import json, sys; print(json.load(sys.stdin)["services"]["us-client"]["environment"]["FLAME_POLICY_MAX_EPSILON"])')
"$python" scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000 --dp --max-epsilon "$cap"
# from the host, MLflow refuses to move @champion to an anonymous client and to the reader
"$python" - <<'EOF'
import base64, json, os, urllib.error, urllib.request

def status(headers: dict) -> int:
    body = json.dumps({"name": "flame-fraud", "alias": "champion", "version": "1"}).encode()
    request = urllib.request.Request(
        "http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias", data=body,
        method="POST", headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            return 200
    except urllib.error.HTTPError as err:
        return err.code

login = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ['MLFLOW_TRACKING_PASSWORD']}"
reader = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
got = (status({}), status(reader))
assert got == (401, 403), f"moving @champion: anonymous {got[0]}, reader {got[1]}"
print("compose-e2e: MLflow refuses @champion moves: anonymous 401, reader 403")
EOF
# regions joined through the gateway; from this host, the public port must refuse `flwr run`
ca=$(mktemp -d)/ca.crt
docker cp "$(compose ps -a -q certs)":/certs/authority/ca.crt "$ca" >/dev/null
"$python" scripts/verify_gateway.py --ca "$ca"
# the trust boundaries on the same stack: from each region container only the gateway answers
# (not the SuperLink's port, not MLflow), an unsigned SuperExec task request is refused, a 100 MB
# body to the gateway gets 413 and a burst from one address 429 (scripts/verify_boundaries.py)
regions=$("$python" -c 'from flame.settings import load_settings; print(*load_settings().regions)')
"$python" scripts/verify_boundaries.py --project "$project" --ca "$ca" --regions "${regions// /,}"
# keys made where they are used: each region's key pair is in its own folder of region-keys
# (which only its own services mount); no coordinator volume holds a node's private key
for volume in $(docker volume ls -q --filter "label=com.docker.compose.project=$project"); do
  case "$volume" in
    *_region-keys) check="for r in $regions; do test -s /v/\$r/node.key || exit 1; done" ;;
    *) check='! grep -rlqs "OPENSSH PRIVATE KEY" /v' ;;
  esac
  docker run --rm --network none -v "$volume:/v:ro" flame:latest sh -c "$check" \
    || { log "FAILED: volume $volume (a region's key where it does not belong, or one missing)"; exit 1; }
done
log "each region's private key is in its own key folder only; no coordinator volume holds one"
# a rogue FAB from the coordinator's host (a local user's reach): an AgentApp-only app runs on
# no region; then a planted install folder of the approved app, loaded by no run
"$python" scripts/verify_approval.py agentapp --project "$project" --ca "$ca" --regions "${regions// /,}"
"$python" scripts/verify_approval.py plant --project "$project" --regions "${regions// /,}"

# a second run on the same stack: the regions' ledgers keep the first run's releases
t4=$(date +%s)
code=0
compose run --rm --no-deps launcher > "$(dirname "$ca")/second.log" 2>&1 || code=$?
t5=$(date +%s)
grep -E "flame: (round|Run|Saved)" "$(dirname "$ca")/second.log" || true
log "second run: launcher exit code $code; $((t5 - t4)) s"
[ "$code" = 0 ] || { tail -40 "$(dirname "$ca")/second.log"; log "the second run failed"; exit 1; }
"$python" scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000 --dp --max-epsilon "$cap"
"$python" scripts/verify_approval.py planted --project "$project" --regions "${regions// /,}"
# each region's privacy ledger (its own state volume): exactly the two runs
for region in $regions; do
  ledger=$(compose exec -T "$region-client" flame ledger 2>&1) \
    || { echo "$ledger"; log "flame ledger failed in $region-client"; exit 1; }
  echo "$ledger"
  header=$(echo "$ledger" | grep -E "^region $region \(" || true)
  runs=$(echo "$ledger" | grep -cE '^  [0-9]+ ' || true)
  echo "$header" | grep -q ": 2 runs, lifetime" && [ "$runs" = 2 ] \
    || { log "FAILED: the $region ledger shows $runs run lines, not 2 (header: $header)"; exit 1; }
  log "the $region ledger holds both runs"
done
# each region's own scorer (up since `compose up`) serves the registered champion: version 1
# or 2 (the alias moves to the second run's model only if it beat the first on the test set);
# rows streamed one per request through each, a restart halfway, match `flame score`
"$python" scripts/verify_region_scorer.py --project "$project" --regions "${regions// /,}" \
  --mlflow http://127.0.0.1:5000 --version 1,2
log "passed (setup $((t1 - t0)) s, build $((t2 - t1)) s, run $((t3 - t2)) s, second run $((t5 - t4)) s)"
