"""Check each compose region's own scorer from the host: it serves the registry's champion on the
region's transactions, one per request, with the history in the region's own Redis, and gives
the same probabilities as ``flame score`` of the same model on the whole file, across a restart.

    python scripts/verify_region_scorer.py --project flame-e2e --regions us,eu \\
        --mlflow http://127.0.0.1:5000 --version 1,2

Rows: ``--rows`` synthetic PaySim rows (the generator's output, in step order, with repeated
payees and TRANSFER -> CASH_OUT pairs; at least ``--min-history`` rows must have a nonzero
history feature). The reference: the champion's ``model.pt`` (downloaded with the reader's
login, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) scored by ``flame score`` in the
flame image, without a network, on the whole file. Then, for each region in turn, every row
goes to its scorer (host port from ``docker compose port``) one per request; halfway through
``docker compose restart <region>-scorer``; every probability must equal the reference within
``--tolerance``. The same rows go to every region: each matches only if no region sees another's
payees (each has its own history). Also: /health names a Redis history, the region's Redis
holds keys, /metrics answers Prometheus text, only the region's scorer reaches its Redis, and a
row without ``amount`` gets a one-line 400 naming it. Exit 0 only if all of that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from verify_boundaries import PROBE, addresses, compose
from verify_scorer import champion, post


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as err:  # the scorer is restarting
        return 0, str(err)


def wait_serving(url: str, version: str, timeout: float) -> dict:
    """/health once the scorer serves ``version``; SystemExit after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(f"{url}/health")
        if status == 200 and json.loads(body).get("model_version") == version:
            return json.loads(body)
        if time.monotonic() > deadline:
            raise SystemExit(f"verify-region-scorer: {url} does not serve version {version} "
                             f"after {timeout:.0f} s: {status} {body[:200]}")  # fmt: skip
        time.sleep(1)


def reference(rows_csv: Path, model_pt: Path, out_csv: Path) -> list[float]:
    """``flame score`` of ``model_pt`` (in the same folder) on the whole file, in the flame
    image, without a network."""
    work = rows_csv.parent
    command = [
        "docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "-e", "HOME=/tmp", "-e", "FLAME_CACHE_DIR=/tmp/cache",
        "-e", "FLAME_STATE_DIR=/tmp/state", "-e", "FLAME_HISTORY_URL=",
        "-v", f"{work}:/work", "flame:latest",
        "flame", "score", f"/work/{rows_csv.name}", "--model", f"/work/{model_pt.name}",
        "--out", f"/work/{out_csv.name}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"verify-region-scorer: flame score failed: {done.stderr.strip()[-400:]}")
    print(f"verify-region-scorer: flame score (in the image): {done.stdout.strip()}")
    import pandas as pd

    return pd.read_csv(out_csv)["fraud_probability"].tolist()


def probe(project: str, service: str, targets: list[str]) -> dict[str, str]:
    done = compose(project, "exec", "-T", service, "python", "-c", PROBE, *targets)
    if done.returncode != 0:
        raise SystemExit(f"verify-region-scorer: the probe failed in {service}: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--project", required=True, help="the compose project")
    p.add_argument("--regions", default="us,eu")
    p.add_argument("--mlflow", default="http://127.0.0.1:5000")
    p.add_argument("--model", default="flame-fraud", help="registered model name")
    p.add_argument("--version", default="1,2", help="the champion versions expected")
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--seed", type=int, default=24)
    p.add_argument("--min-history", type=int, default=20)
    p.add_argument("--tolerance", type=float, default=1e-6)
    p.add_argument("--timeout", type=float, default=180)
    args = p.parse_args()
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    failures: list[str] = []

    version = champion(args.mlflow.rstrip("/"), args.model)
    if version not in args.version.split(","):
        print(f"verify-region-scorer: the registry's champion is version {version}, "
              f"not one of {args.version}")  # fmt: skip
        return 1
    print(f"verify-region-scorer: the registry's champion is version {version}")

    from flame.data.features import HISTORY, build_features, feature_names
    from flame.data.loader import read_paysim_file
    from flame.data.synth import generate, write_csv
    from flame.track.registry import model_file

    work = Path(tempfile.mkdtemp(prefix="region-scorer-"))
    work.chmod(0o777)  # the image's user writes flame score's output here
    rows_csv = work / "rows.csv"
    write_csv(generate(args.rows, seed=args.seed, fraud_rate=0.05), rows_csv)
    frame = read_paysim_file(rows_csv, require_labels=False)  # what flame score reads
    names = feature_names()
    history = build_features(frame)[:, [names.index(c) for c in HISTORY]]
    with_history = int((history != 0).any(axis=1).sum())
    print(f"verify-region-scorer: {len(frame)} rows in step order, "
          f"{frame['nameDest'].nunique()} payees; rows with a nonzero history feature: "
          f"{with_history} (" + ", ".join(f"{c} {int((history[:, i] != 0).sum())}"
                                          for i, c in enumerate(HISTORY)) + ")")  # fmt: skip
    if with_history < args.min_history or not frame["step"].is_monotonic_increasing:
        print(f"verify-region-scorer: the rows do not exercise the history (fewer than "
              f"{args.min_history} rows with history, or not in step order)")  # fmt: skip
        return 1
    model_pt = work / "model.pt"  # readable by the image's user (MLflow's download is not)
    shutil.copyfile(model_file(f"models:/{args.model}/{version}", args.mlflow), model_pt)
    model_pt.chmod(0o644)
    batch = reference(rows_csv, model_pt, work / "batch.csv")
    records = frame.drop(columns=[c for c in ("isFraud", "isFlaggedFraud") if c in frame])
    records = records.assign(type=records["type"].astype(str)).to_dict("records")

    for region in regions:
        service = f"{region}-scorer"
        port = compose(args.project, "port", service, "8080").stdout.strip()
        if not port:
            failures.append(f"{service} publishes no port")
            continue
        url = f"http://{port}"
        health = wait_serving(url, version, args.timeout)
        print(f"verify-region-scorer: {service} on {url}: {health}")
        if not str(health.get("history", "")).startswith("redis"):
            failures.append(f"{service}'s /health names no Redis history: {health}")
        half, worst, wrong = len(records) // 2, 0.0, []
        for number, row in enumerate(records):
            if number == half:
                restarted = compose(args.project, "restart", service)
                if restarted.returncode != 0:
                    raise SystemExit(f"verify-region-scorer: restarting {service} failed: "
                                     f"{restarted.stderr.strip()}")  # fmt: skip
                wait_serving(url, version, args.timeout)
                print(f"verify-region-scorer: restarted {service} after row {half} of "
                      f"{len(records)}")  # fmt: skip
            status, reply = post(url, {"rows": [row]})
            if status != 200 or reply.get("model_version") != version:
                failures.append(f"{service} row {number}: {status} {reply}")
                break
            gap = abs(reply["predictions"][0]["fraud_probability"] - batch[number])
            worst = max(worst, gap)
            if gap > args.tolerance:
                wrong.append(number)
        after = [n for n in wrong if n >= half]
        print(f"verify-region-scorer: {service}: {len(records)} rows one per request, largest "
              f"difference from flame score {worst:.2e}; rows off by more than "
              f"{args.tolerance:g}: {len(wrong)} ({len(after)} after the restart)")  # fmt: skip
        if wrong:
            failures.append(f"{service}: rows {wrong[:10]} differ from flame score")
        else:
            print(f"verify-region-scorer: {service} matches flame score on every row, "
                  "before and after its restart")  # fmt: skip
        keys = compose(args.project, "exec", "-T", f"{region}-redis", "redis-cli", "dbsize")
        print(f"verify-region-scorer: {region}-redis holds {keys.stdout.strip()} keys")
        if not keys.stdout.strip().isdigit() or int(keys.stdout.strip()) == 0:
            failures.append(f"{region}-redis holds no history: {keys.stdout}{keys.stderr}")
        status, text = get(f"{url}/metrics")
        samples = [line for line in text.splitlines() if line and not line.startswith("#")]
        if status != 200 or "# TYPE" not in text or not samples:
            failures.append(f"{service} /metrics answered {status} without Prometheus text")
        else:
            print(f"verify-region-scorer: {service} /metrics: {len(samples)} samples")
        status, reply = post(url, {"rows": [{k: v for k, v in records[0].items()
                                             if k != "amount"}]})  # fmt: skip
        if status != 400 or "amount" not in reply.get("error", ""):
            failures.append(f"{service}: a row without 'amount' got {status} {reply}")
        else:
            print(f"verify-region-scorer: {service}: bad request -> 400: {reply['error']}")
    if not failures and len(regions) > 1:
        print(f"verify-region-scorer: the same rows matched in {', '.join(regions)} one after "
              "another: each region's scorer has its own history")  # fmt: skip

    # each region's Redis: reached by its own scorer, by name and address, and by no one else
    for region in regions:
        name = f"{region}-redis:6379"
        redis = [name, *(f"{a}:6379" for a in addresses(args.project, f"{region}-redis"))]
        others = [*(f"{r}-scorer" for r in regions if r != region), f"{region}-client", "mlflow"]
        found = []
        for service in [f"{region}-scorer", *others]:
            seen = probe(args.project, service, redis)
            reached = [t for t, result in seen.items() if result == "open"]
            if service == f"{region}-scorer" and seen[name] != "open":
                found.append(f"{service} cannot reach {name}: {seen[name]}")
            elif service != f"{region}-scorer" and reached:
                found.append(f"{service} reaches {', '.join(reached)}")
        failures += found
        if not found:
            print(f"verify-region-scorer: only {region}-scorer reaches {region}-redis "
                  f"(by name and address; not {', '.join(others)})")  # fmt: skip

    for failure in failures:
        print(f"verify-region-scorer: FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    print("verify-region-scorer: passed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    sys.exit(main())
