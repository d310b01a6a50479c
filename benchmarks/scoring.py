"""Scoring benchmark: a region's scorer (``flame serve``) over HTTP, with and without its store.

    python benchmarks/scoring.py [--out benchmarks/results] [--requests 3000] [--full-rows N]

Every number comes from this one run on this machine. For each history store (``memory``: in
the process, no store; ``sqlite``: FLAME_STATE_DIR; ``redis``: Debian's redis-server, as in
compose) a real ``flame serve`` process serves a registered champion (the default
architecture, random weights: latency does not depend on what the weights are) and this
process, on the same cores, sends synthetic PaySim rows in step order:
- one transaction per request (keep-alive), after a warm-up: p50 and p99 latency as the
  client sees it;
- batches of 1,000 rows per request: rows per second.
Then a full-size stream (6,362,620 rows, the Kaggle file's length; synthetic) goes through
the Redis store in batches of 10,000: Redis's memory after it, per payee and in total.
Targets on 2 cores: p99 at most 10 ms for one transaction, at least 50,000 rows/s in batches.
Writes scoring.md and scoring.json to --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FULL_ROWS = 6_362_620
TARGET_P99_MS, TARGET_ROWS_S = 10.0, 50_000
BATCH = 1_000


def rows_in_step_order(n: int, seed: int) -> list[dict[str, object]]:
    from flame.data.synth import generate

    frame = generate(n, seed=seed, fraud_rate=0.0013).sort_values("step", kind="stable")
    frame = frame.drop(columns=["isFraud", "isFlaggedFraud"])
    return frame.assign(type=frame["type"].astype(str)).to_dict("records")


def register_champion(work: Path) -> str:
    """A champion in an embedded MLflow store under ``work``; its tracking URI."""
    import mlflow

    from flame.model.net import build_model, new_card, save_model
    from flame.settings import FlameSettings
    from flame.track.registry import log_model

    settings = FlameSettings()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    card = new_card(True, settings.hidden_sizes, 0.5)
    card.metrics = {"pr_auc": 0.5}
    save_model(work / "model.pt", build_model(card, seed=0), card)
    experiment = client.create_experiment("scoring-benchmark", f"file://{work / 'artifacts'}")
    log_model(client.create_run(experiment).info.run_id, work / "model.pt", card,
              settings.mlflow_model_name, {"test_set": "benchmark"})  # fmt: skip
    return uri


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    from flame.ops.local_deployment import free_port

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=(work / "redis.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start; see {work / 'redis.log'}")


def start_scorer(work: Path, uri: str, history: str, name: str) -> tuple[subprocess.Popen, int]:
    from flame.ops.local_deployment import free_port, wait_healthy

    port, log = free_port(), work / f"scorer-{name}.log"
    env = os.environ | {
        "FLAME_MLFLOW_TRACKING_URI": uri, "FLAME_HISTORY_URL": history, "FLAME_REGION": name,
        "FLAME_SERVE_PORT": str(port), "FLAME_STATE_DIR": str(work / "state"),
        "FLAME_SERVE_MAX_ROWS": str(BATCH), "FLAME_MLFLOW_CREDENTIALS": "",
    }  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "flame.cli", "serve"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip
    wait_healthy(f"http://127.0.0.1:{port}/health", proc, log, timeout=120)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body(rows: list[dict[str, object]]) -> bytes:
    return json.dumps({"rows": rows}).encode()


def post(connection: http.client.HTTPConnection, encoded: bytes) -> None:
    connection.request("POST", "/predict", encoded, {"Content-Type": "application/json"})
    reply = connection.getresponse()
    body = reply.read()
    if reply.status != 200:
        raise RuntimeError(f"scorer answered {reply.status}: {body[:200]!r}")


def measure(pid: int, port: int, rows: list[dict[str, object]], requests: int) -> dict[str, float]:
    """Latency of one row per request, then rows/s in batches; request bodies are encoded
    before the clock starts (a caller's JSON encoding is the caller's cost, on its own machine),
    and the scorer's own CPU time per request is read from /proc."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    warm = 300
    singles = [body([row]) for row in rows[: warm + requests]]
    rest = rows[warm + requests :]
    batches = [body(rest[i : i + BATCH]) for i in range(0, len(rest) - BATCH + 1, BATCH)]
    for encoded in singles[:warm]:
        post(connection, encoded)
    latency, cpu = [], cpu_seconds(pid)
    for encoded in singles[warm:]:
        started = time.perf_counter()
        post(connection, encoded)
        latency.append(time.perf_counter() - started)
    cpu_single = (cpu_seconds(pid) - cpu) / len(latency)
    started, cpu = time.perf_counter(), cpu_seconds(pid)
    for encoded in batches:
        post(connection, encoded)
    seconds, cpu_batch = time.perf_counter() - started, (cpu_seconds(pid) - cpu) / len(batches)
    sent = len(batches) * BATCH
    ms = np.array(latency) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "requests": len(latency), "scorer_cpu_ms_per_row_request": cpu_single * 1e3,
            "batch_rows": sent, "rows_per_s": sent / seconds,
            "scorer_cpu_ms_per_batch": cpu_batch * 1e3}  # fmt: skip


def full_stream(url: str, rows: int) -> dict[str, float]:
    """``rows`` synthetic rows through a Redis store in batches of 10,000: its memory after."""
    import redis
    from tqdm import tqdm

    from flame.data.history import History
    from flame.data.synth import generate
    from flame.ops.history_store import RedisStore

    client = redis.Redis.from_url(url)
    client.flushdb()
    base = client.info("memory")["used_memory"]
    frame = generate(rows, seed=7).sort_values("step", kind="stable").reset_index(drop=True)
    payees = int(frame["nameDest"].nunique())
    history = History(RedisStore(client, "flame:full", 35 * 24 * 3600))
    started = time.perf_counter()
    for i in tqdm(range(0, rows, 10_000), desc="full-size stream into Redis", unit="batch"):
        history.features(frame.iloc[i : i + 10_000])
    seconds = time.perf_counter() - started
    used = client.info("memory")["used_memory"] - base
    return {"rows": rows, "payees": payees, "keys": int(client.dbsize()),
            "redis_mib": used / 2**20, "bytes_per_payee": used / payees,
            "rows_per_s": rows / seconds}  # fmt: skip


def write(out: Path, results: dict[str, object]) -> str:
    lines = [
        f"# Scoring benchmark ({results['date']}, {results['machine']})",
        "",
        "One `flame serve` process per store; the client on the same cores, its request bodies "
        "encoded before timing. Synthetic PaySim rows in step order; the default model. The "
        "scorer's CPU time per request is its own (from /proc), less sensitive to a busy machine "
        "than latency.",
        "",
        "| history store | one row: p50 ms | one row: p99 ms | scorer CPU ms per row request "
        "| batches of 1,000: rows/s | scorer CPU ms per batch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["stores"].items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['scorer_cpu_ms_per_row_request']:.2f} | {r['rows_per_s']:,.0f} | "
                     f"{r['scorer_cpu_ms_per_batch']:.1f} |")  # fmt: skip
    lines += [
        "",
        f"Targets: p99 at most {TARGET_P99_MS:g} ms for one row, at least {TARGET_ROWS_S:,} rows/s "
        "in batches.",
    ]
    if "full" in results:
        f = results["full"]
        lines += [
            "",
            f"Full-size stream into Redis: {f['rows']:,} rows, {f['payees']:,} distinct payees, "
            f"{f['keys']:,} keys, {f['redis_mib']:,.0f} MiB of Redis memory "
            f"({f['bytes_per_payee']:.0f} bytes per payee), {f['rows_per_s']:,.0f} rows/s "
            "(batches of 10,000, no HTTP).",
        ]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scoring.md").write_text(text)
    (out / "scoring.json").write_text(json.dumps(results, indent=2) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--full-rows", type=int, default=FULL_ROWS)
    args = parser.parse_args()
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}", "stores": {},
    }  # fmt: skip
    rows = rows_in_step_order(300 + args.requests + args.batches * BATCH, seed=3)
    with tempfile.TemporaryDirectory(prefix="flame-scoring-") as tmp:
        work = Path(tmp)
        uri = register_champion(work)
        redis_proc, redis_url = start_redis(work)
        try:
            stores = {"memory (no store)": "memory://", "sqlite": "", "redis": redis_url}
            for i, (name, url) in enumerate(stores.items()):
                proc, port = start_scorer(work, uri, url, f"r{i}")
                try:
                    results["stores"][name] = measure(proc.pid, port, rows, args.requests)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                print(f"{name}: {results['stores'][name]}", flush=True)
            if args.full_rows:
                results["full"] = full_stream(redis_url, args.full_rows)
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
    print(write(args.out, results))


if __name__ == "__main__":
    main()
