"""Check through MLflow's REST API that the newest Flame run finished with every round's server
metrics and every region's client metrics, each round exactly once. Exit 0 only if so.

A DP run (its param ``dp`` is True; ``--dp``: the run must be one) must also hold each region's
ε for every round it trained (``client_<region>_train/epsilon``: the run's ε in that region's
own ledger, training and privatized evaluation answers together), finite, above 0 and at most
``--max-epsilon``, and no region data set input (a DP region sends no fraud count or digest).
Its regions' validation AUCs are reported, not required: a privatized answer in which the noise
hides every fraud has none (the counts and F1 it always has are required instead); the same with
``--private-evaluation`` for a non-DP run on regions that privatize evaluation.

    python scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000 --rounds 3 --regions us,eu
    python scripts/verify_mlflow_run.py --dp --max-epsilon 3
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import urllib.parse
import urllib.request
from collections import Counter


def login() -> dict[str, str]:
    """MLflow's basic-auth header from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    (compose's MLflow answers only logins; the e2e scripts set the reader's), if set."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not (user and password):
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def call(uri: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{path}", data=data,
        headers={"Content-Type": "application/json"} | login(),
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def history(uri: str, run_id: str, key: str) -> list[dict]:
    query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
    return call(uri, f"metrics/get-history?{query}").get("metrics", [])


def dp_problems(
    uri: str, run: dict, rounds: int, regions: list[str], max_epsilon: float
) -> list[str]:
    """What a DP run lacks: each region's ε every round, within the cap; no region data set."""
    run_id, found = run["info"]["run_id"], []
    for region in regions:
        key = f"client_{region}_train/epsilon"
        epsilon = {int(m["step"]): float(m["value"]) for m in history(uri, run_id, key)}
        if missing := sorted(set(range(1, rounds + 1)) - set(epsilon)):
            found.append(f"{key}: rounds {missing} missing (a DP run reports ε every round)")
        bad = {step: e for step, e in epsilon.items() if not 0 < e < math.inf}
        if max_epsilon:
            bad |= {step: e for step, e in epsilon.items() if e > max_epsilon * 1.01}
        if bad:
            found.append(f"{key}: {bad} not in (0, {max_epsilon or math.inf:g}]")
        if epsilon:
            shown = ", ".join(f"{e:.3f}" for _, e in sorted(epsilon.items()))
            print(f"region {region}: ε per round {shown}")
    inputs = run.get("inputs", {}).get("dataset_inputs", [])
    if shared := [i["dataset"]["name"] for i in inputs if i["dataset"]["name"] != "server-test"]:
        found.append(f"data set inputs {shared} logged in a DP run (regions send none under DP)")
    return found


def problems(
    uri: str,
    experiment: str,
    rounds: int,
    regions: list[str],
    require_dp: bool = False,
    max_epsilon: float = 0.0,
    private_evaluation: bool = False,
) -> list[str]:
    name = urllib.parse.quote(experiment)
    exp = call(uri, f"experiments/get-by-name?experiment_name={name}")["experiment"]
    runs = call(
        uri,
        "runs/search",
        {
            "experiment_ids": [exp["experiment_id"]],
            "order_by": ["start_time DESC"],
            "max_results": 1,
        },
    ).get("runs", [])
    if not runs:
        return [f"no run in experiment {experiment!r}"]
    run = runs[0]
    run_id, found = run["info"]["run_id"], []
    print(f"newest run {run_id} ({run['info'].get('run_name')}): {run['info']['status']}")
    if run["info"]["status"] != "FINISHED":
        found.append(f"run status is {run['info']['status']}")
    params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
    if not params:
        found.append("no params logged")
    dp = params.get("dp") == "True"
    print(f"DP run: {dp}" + (f" (target ε={params.get('dp_target_epsilon')})" if dp else ""))
    if require_dp and not dp:
        found.append(f"not a DP run (param dp={params.get('dp')!r})")
    # Privatized evaluation answers (a region guarding its privacy, so every DP run's regions
    # here): when the noise hides every fraud of a region's validation rows its AUCs are
    # undefined (not logged), so the run must hold the figures every answer has (counts, F1),
    # and its AUCs are reported, not required.
    noisy = dp or private_evaluation
    client = ("f1", "num_examples") if noisy else ("f1", "roc_auc")
    wanted = [(k, range(0, rounds + 1)) for k in ("server/pr_auc", "server/roc_auc", "server/f1")]
    pooled = "client_aggregate/f1" if noisy else "client_aggregate/pr_auc"
    wanted += [(pooled, range(1, rounds + 1))]
    wanted += [(f"client_{r}/{m}", range(1, rounds + 1)) for r in regions for m in client]
    for key, steps in wanted:
        logged = Counter(m["step"] for m in history(uri, run_id, key))
        if missing := sorted(set(steps) - set(logged)):
            found.append(f"{key}: rounds {missing} missing")
        if twice := sorted(step for step, count in logged.items() if count > 1):
            found.append(f"{key}: rounds {twice} logged more than once")
    if noisy:
        for key in ["client_aggregate/pr_auc", *(f"client_{r}/pr_auc" for r in regions)]:
            defined = {int(m["step"]): float(m["value"]) for m in history(uri, run_id, key)}
            shown = ", ".join(f"{step}: {v:.3f}" for step, v in sorted(defined.items()))
            print(f"{key} (privatized answers): defined in {len(defined)} of {rounds} rounds"
                  + (f" ({shown})" if shown else ""))  # fmt: skip
    artifacts = {a["path"] for a in call(uri, f"artifacts/list?run_id={run_id}").get("files", [])}
    for needed in ("model.pt", "roc_curve.png", "pr_curve.png"):
        if needed not in artifacts:
            found.append(f"artifact {needed} missing")
    if dp:
        found += dp_problems(uri, run, rounds, regions, max_epsilon)
    return found


def main() -> int:
    from flame.settings import load_settings

    settings = load_settings()  # defaults: the same .env / FLAME_* the stack was started with
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--uri", default="http://127.0.0.1:5000")
    p.add_argument("--experiment", default=settings.mlflow_experiment)
    p.add_argument("--rounds", type=int, default=settings.num_server_rounds)
    p.add_argument("--regions", default=",".join(settings.regions))
    p.add_argument("--dp", action="store_true", help="the run must be a DP run")
    p.add_argument(
        "--max-epsilon", type=float, default=settings.policy_max_epsilon,
        help="largest ε a region may report (the regions' FLAME_POLICY_MAX_EPSILON); 0 = any",
    )  # fmt: skip
    p.add_argument(
        "--private-evaluation", action="store_true",
        help="the regions privatize evaluation (FLAME_POLICY_EVAL_NOISE) in a non-DP run too",
    )  # fmt: skip
    args = p.parse_args()
    found = problems(
        args.uri, args.experiment, args.rounds, args.regions.split(","), args.dp,
        args.max_epsilon, args.private_evaluation,
    )  # fmt: skip
    for problem in found:
        print(f"MISSING: {problem}")
    print("MLflow run complete" if not found else f"{len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
