"""Check a scoring service from the host: it serves the registry's champion, scores synthetic
rows like the model should, and answers a bad request with a one-line 400. The rows become
part of the scorer's history (a region's scorer remembers every row it scores): point it at a
scorer whose history may hold them, e.g. the first compose region's before real traffic.

    python scripts/verify_scorer.py --url http://127.0.0.1:8081 --version 1
    python scripts/verify_scorer.py --version 1,2 --mlflow http://127.0.0.1:5000

``--version`` lists the versions the champion may be (after two runs it is 1 or 2: the alias
moves only when a run beats it); with ``--mlflow`` the served one must also be the version the
registry's champion alias names now.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def login() -> dict[str, str]:
    """MLflow's basic-auth header from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    (compose's MLflow answers only logins; the e2e scripts set the reader's), if set."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not (user and password):
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def champion(mlflow: str, model: str) -> str:
    """The version the registry's champion alias names (MLflow REST API)."""
    query = urllib.parse.urlencode({"name": model, "alias": "champion"})
    url = f"{mlflow}/api/2.0/mlflow/registered-models/alias?{query}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=login()), timeout=30) as reply:
        return str(json.load(reply)["model_version"]["version"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8081")
    p.add_argument("--version", default="1", help="the champion versions expected (1 or 1,2)")
    p.add_argument("--mlflow", default="", help="MLflow URI: serve the champion it names now")
    p.add_argument("--model", default="flame-fraud", help="registered model name")
    p.add_argument("--timeout", type=float, default=120)
    args = p.parse_args()
    expected = [v.strip() for v in args.version.split(",") if v.strip()]
    if args.mlflow:
        named = champion(args.mlflow.rstrip("/"), args.model)
        if named not in expected:
            print(f"verify-scorer: the registry's champion is version {named}, not {expected}")
            return 1
        print(f"verify-scorer: the registry's champion is version {named} of {args.version}")
        expected = [named]
    from flame.data.synth import generate

    frame = generate(2_000, seed=11, fraud_rate=0.05)
    rows = frame.assign(type=frame["type"].astype(str)).drop(columns=["isFraud", "isFlaggedFraud"])
    deadline = time.monotonic() + args.timeout
    status, reply = post(args.url, {"rows": rows.to_dict("records")})
    while status == 503 and time.monotonic() < deadline:
        time.sleep(2)
        status, reply = post(args.url, {"rows": rows.to_dict("records")})
    if status != 200 or reply.get("model_version") not in expected:
        print(f"verify-scorer: expected version {' or '.join(expected)}, got {status} {reply}")
        return 1
    probability = [p["fraud_probability"] for p in reply["predictions"]]
    flagged = [p["is_fraud_predicted"] for p in reply["predictions"]]
    caught = sum(f for f, y in zip(flagged, frame["isFraud"], strict=True) if y)
    print(f"verify-scorer: version {reply['model_version']} scored {len(probability)} rows, "
          f"{sum(flagged)} flagged, {caught} of {int(frame['isFraud'].sum())} frauds")  # fmt: skip
    if not all(0 <= x <= 1 for x in probability) or caught < frame["isFraud"].sum() / 2:
        print("verify-scorer: the served model does not catch the synthetic frauds")
        return 1
    status, reply = post(args.url, {"rows": [rows.drop(columns=["amount"]).iloc[0].to_dict()]})
    if status != 400 or "amount" not in reply.get("error", ""):
        print(f"verify-scorer: a row without 'amount' got {status} {reply}, not a 400 naming it")
        return 1
    print(f"verify-scorer: passed (bad request -> 400: {reply['error']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
