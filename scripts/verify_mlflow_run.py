"""Check through MLflow's REST API that the newest Flame run finished with every round's server
metrics and every region's client metrics, each round exactly once. Exit 0 only if so.

    python scripts/verify_mlflow_run.py --uri http://127.0.0.1:5000 --rounds 3 --regions us,eu
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import urllib.request
from collections import Counter


def call(uri: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def problems(uri: str, experiment: str, rounds: int, regions: list[str]) -> list[str]:
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
    wanted = [(k, range(0, rounds + 1)) for k in ("server/pr_auc", "server/roc_auc", "server/f1")]
    wanted += [("client_aggregate/pr_auc", range(1, rounds + 1))]
    wanted += [
        (f"client_{r}/{m}", range(1, rounds + 1)) for r in regions for m in ("f1", "roc_auc")
    ]
    for key, steps in wanted:
        query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
        history = call(uri, f"metrics/get-history?{query}").get("metrics", [])
        logged = Counter(m["step"] for m in history)
        if missing := sorted(set(steps) - set(logged)):
            found.append(f"{key}: rounds {missing} missing")
        if twice := sorted(step for step, count in logged.items() if count > 1):
            found.append(f"{key}: rounds {twice} logged more than once")
    artifacts = {a["path"] for a in call(uri, f"artifacts/list?run_id={run_id}").get("files", [])}
    for needed in ("model.pt", "roc_curve.png", "pr_curve.png"):
        if needed not in artifacts:
            found.append(f"artifact {needed} missing")
    if not run["data"].get("params"):
        found.append("no params logged")
    return found


def main() -> int:
    from flame.settings import load_settings

    settings = load_settings()  # defaults: the same .env / FLAME_* the stack was started with
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--uri", default="http://127.0.0.1:5000")
    p.add_argument("--experiment", default=settings.mlflow_experiment)
    p.add_argument("--rounds", type=int, default=settings.num_server_rounds)
    p.add_argument("--regions", default=",".join(settings.regions))
    args = p.parse_args()
    found = problems(args.uri, args.experiment, args.rounds, args.regions.split(","))
    for problem in found:
        print(f"MISSING: {problem}")
    print("MLflow run complete" if not found else f"{len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
