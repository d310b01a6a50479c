"""Scale benchmark: full-size data preparation, local training vs plain PyTorch, rounds.

    python benchmarks/scale.py [--out benchmarks/results] [--work /tmp/flame-scale] [--quick]

Every number comes from this one run on this machine; each measurement runs in its own child
process (so peak RSS is that process's own). Measured:
- preparation of the Kaggle-size file (6,362,620 rows; the real file at data/ when present,
  else a synthetic one generated first) from CSV, and loading a region from the cache;
- local training: the Flame ClientApp's train handler on region ``us`` (its full partition,
  one epoch) vs a plain PyTorch loop over the same rows, model, optimiser and batch size;
- Flower's own round overhead (simulation, a no-op app with a tiny model and no data);
- a deployment round (SuperLink + 2 SuperNodes as local processes, default data), with the
  ClientApp process start-up cost seen in its logs, and bytes per round;
- simulation time per round with 2, 10 and 50 regions;
- ``flame score`` (streamed) on the same file with a default model, without and with --report.
Writes scale.md and scale.json to --out; ``--only score`` measures scoring alone and writes
score.md and score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KAGGLE = ROOT / "data" / "PS_20174392719_1491204439457_log.csv"
FULL_ROWS = 6_362_620
REPEATS = 2  # training is timed twice per process; the table shows the faster (less noise)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's at spawn)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- children: each prints one JSON line -----------------------------------------------------


def child_prepare(csv: str, cache: str) -> dict:
    from flame.data.partition import prepare
    from flame.settings import load_settings

    settings = load_settings(data_path=csv, cache_dir=cache)
    started = time.perf_counter()
    folder = prepare(settings.data_spec())
    seconds = time.perf_counter() - started
    summary = json.loads((folder / "summary.json").read_text())
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "summary": summary}


def child_load(csv: str, cache: str) -> dict:
    from flame.data.cache import cached_region
    from flame.settings import load_settings

    settings = load_settings(data_path=csv, cache_dir=cache)
    started = time.perf_counter()
    arrays = cached_region(settings.data_spec(), "us", "")
    assert arrays is not None, "cache missing"
    return {"seconds": time.perf_counter() - started, "rows": len(arrays["train"][1])}


def child_flame_train(csv: str, cache: str, epochs: int) -> dict:
    """The real ClientApp train handler, called with a train Message as Flower would."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    import flame.model.train  # noqa: F401 - torch imported before timing, as in the plain loop
    from flame.data.features import feature_names
    from flame.model.net import FraudMLP
    from flame.settings import load_settings

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    os.environ |= {"FLAME_DATA_PATH": csv, "FLAME_CACHE_DIR": cache}  # the node's own settings
    from flame.fl import client_app
    from flame.settings import run_config

    # the same passes as the plain loop: epochs decide the steps, one round; run settings
    # reach the ClientApp as Flower's run config, as in a real run
    settings = load_settings(
        data_path=csv, cache_dir=cache, local_epochs=epochs, num_server_rounds=1,
        min_local_steps=1, lr_schedule="constant",
    )  # fmt: skip
    model = FraudMLP(len(feature_names(settings.drop_balance_features)), settings.hidden_sizes)
    content = {"arrays": ArrayRecord(model.state_dict())}
    content["config"] = ConfigRecord({"server-round": 1})  # type: ignore[assignment]
    msg = Message(RecordDict(content), dst_node_id=1, message_type="train")  # type: ignore[arg-type]
    times = []
    for _ in range(REPEATS):  # the first call also loads the region's arrays
        context = Context(1, 1, {"partition-id": 0}, RecordDict(), run_config(settings))
        started = time.perf_counter()
        reply = client_app.train(msg, context)
        times.append(time.perf_counter() - started)
    rows = int(reply.content["metrics"]["num_examples"])
    return {"seconds": min(times), "times": times, "rows": rows, "rss_mb": peak_rss_mb()}


def child_plain_train(csv: str, cache: str, epochs: int) -> dict:
    """A plain PyTorch loop: same arrays, model, Adam, loss and batch size; no Flower."""
    import torch
    from torch import nn

    from flame.data.cache import cached_region
    from flame.model.net import FraudMLP
    from flame.model.train import default_pos_weight
    from flame.settings import load_settings

    settings = load_settings(data_path=csv, cache_dir=cache)
    torch.set_num_threads(settings.torch_threads)
    arrays = cached_region(settings.data_spec(), "us", "")
    assert arrays is not None
    x, y = (torch.from_numpy(a) for a in arrays["train"])
    pos_weight = torch.tensor(default_pos_weight(y.numpy()))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    times = []
    for _ in range(REPEATS):
        torch.manual_seed(0)
        model = FraudMLP(x.shape[1], settings.hidden_sizes)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        started = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for i in range(0, len(x), settings.batch_size):
                idx = order[i : i + settings.batch_size]
                optimizer.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                optimizer.step()
        times.append(time.perf_counter() - started)
    return {"seconds": min(times), "times": times, "rows": len(x), "rss_mb": peak_rss_mb()}


def child_flower_overhead(rounds: int) -> dict:
    """Seconds per round of a no-op ServerApp/ClientApp (tiny model, no data) in simulation."""
    import warnings

    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    client, server, stamps = ClientApp(), ServerApp(), []

    @client.train()
    def _train(msg: Message, context: Context) -> Message:
        content = {"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})}
        return Message(RecordDict(content), reply_to=msg)  # type: ignore[arg-type]

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            stamps.append(time.perf_counter())
            return MetricRecord({})

        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
        strategy.start(grid, ArrayRecord([np.zeros(4, np.float32)]), rounds, evaluate_fn=evaluate)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server, client_app=client, num_supernodes=2,
                       backend_config={"client_resources": {"num_cpus": 1}})  # fmt: skip
    deltas = np.diff(stamps)
    return {"seconds_per_round": float(np.mean(deltas)), "rounds": len(deltas)}


def child_score(csv: str, work: str, report: str) -> dict:
    """``flame score`` through the CLI's entry point, with a default (untrained) model."""
    import contextlib
    import io

    import flame.model.score  # noqa: F401 - torch and pandas imported before timing
    from flame.cli import main
    from flame.model.net import build_model, new_card, save_model
    from flame.settings import load_settings

    settings = load_settings()
    card = new_card(settings.drop_balance_features, settings.hidden_sizes, 0.5)
    model, out = Path(work) / "score-model.pt", Path(work) / "scored.csv"
    save_model(model, build_model(card, seed=0), card)
    argv = ["score", csv, "--model", str(model), "--out", str(out)]
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = main(argv + (["--report"] if report == "report" else []))
    seconds = time.perf_counter() - started
    out.unlink(missing_ok=True)
    found = re.search(r"scored ([\d,]+) rows", printed.getvalue())
    if code != 0 or not found:
        raise RuntimeError(f"flame score exited {code}: {printed.getvalue()[-500:]}")
    rows = int(found.group(1).replace(",", ""))
    return {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds, "rss_mb": peak_rss_mb()}


CHILDREN = {
    "prepare": child_prepare,
    "load": child_load,
    "flame-train": child_flame_train,
    "plain-train": child_plain_train,
    "flower-overhead": child_flower_overhead,
    "score": child_score,
}


def child(name: str, *args: object) -> dict:
    env = os.environ | {"TQDM_DISABLE": "1", "FLAME_MLFLOW": "false"}
    command = [sys.executable, __file__, "--child", name, *map(str, args)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- measurements in the parent ------------------------------------------------------------


def round_seconds(metrics_csv: Path) -> float:
    """Seconds per round after round 1 (which warms caches): from round 1's aggregated update
    to the run's last row, over the remaining rounds. Both ways of evaluating pay for one
    evaluate phase more than those rounds (the two-message flow round 1's, the one-message
    flow the final model's), and the server's rows are logged a round late in the latter,
    so the rounds are timed by their training rows."""
    table = pd.read_csv(metrics_csv)
    trained = table.query("kind == 'client_aggregate' and stage == 'train'").sort_values("round")
    last = table.query("kind == 'server'")["time"].max()
    return float((last - trained["time"].iloc[0]) / (len(trained) - 1))


def deployment_round(
    work: Path, rounds: int, warm: bool = True, extra: dict[str, str] | None = None
) -> dict:
    from flame.ops.local_deployment import LocalDeployment
    from flame.settings import load_settings

    folder = work / "deployment"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    env = {"FLAME_CACHE_DIR": str(work / "cache-default"), "FLAME_OUT_DIR": str(folder / "run"),
           "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1",
           "FLAME_NUM_SERVER_ROUNDS": str(rounds),
           "FLAME_WARM_CLIENTAPP": str(warm).lower()} | (extra or {})  # fmt: skip
    subprocess.run([sys.executable, "-c", "from flame.data.partition import prepare; "
                    "from flame.settings import load_settings; "
                    "prepare(load_settings().data_spec())"],
                   env=os.environ | env, check=True)  # fmt: skip
    with LocalDeployment(folder, load_settings(), env=env) as deployment:
        deployment.start()
        if deployment.submit(ROOT).wait() != 0:
            raise RuntimeError(f"deployment run failed; see {folder}/launch.log")
    metrics = pd.read_csv(folder / "run" / "metrics.csv")
    per_round = round_seconds(folder / "run" / "metrics.csv")
    clients = metrics[metrics["kind"].str.startswith("client:")]
    sent = clients.groupby("round")["bytes_sent"].sum().mean()
    received = clients.groupby("round")["bytes_received"].sum().mean()
    startup, train = [], []
    for log in folder.glob("supernode-*.log"):
        for handler, up in re.findall(r"in ([\d.]+) s \(process up ([\d.]+) s\)", log.read_text()):
            startup.append(float(up) - float(handler))
        handlers = re.findall(r"round (\d+) train: .* in ([\d.]+) s \(process", log.read_text())
        train += [float(s) for rnd, s in handlers if int(rnd) > 1]  # as the rounds timed
    return {
        "train_handler_s": float(np.mean(train)),
        "seconds_per_round": per_round,
        "bytes_sent": float(sent),
        "bytes_received": float(received),
        "clientapp_startup_s": float(np.mean(startup)),
        "final_pr_auc": float(metrics.query("kind == 'server'")["pr_auc"].iloc[-1]),
    }


def compose_round(work: Path, rounds: int) -> dict:
    """The same run in the compose stack (image flame:latest, its default .env-free settings,
    MLflow on as in the product): rounds from the ServerApp's metrics.csv."""
    project = "flame-bench"
    compose = ["docker", "compose", "-p", project]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAME_")}
    subprocess.run([*compose, "down", "-v"], cwd=ROOT, env=env, capture_output=True)
    try:
        subprocess.run([*compose, "up", "-d", "--no-build", "--wait", "mlflow", "superlink",
                        "gateway", "serverapp", "us-client", "eu-client"],
                       cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
        launch = subprocess.run(
            [*compose, "run", "--rm", "--no-deps", "-e", f"FLAME_NUM_SERVER_ROUNDS={rounds}",
             "launcher"], cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if launch.returncode != 0:
            raise RuntimeError(f"compose run failed:\n{launch.stdout[-3000:]}")
        folder = work / "compose-runs"
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        subprocess.run([*compose, "cp", "serverapp:/runs", str(folder)], cwd=ROOT, env=env,
                       check=True, capture_output=True)  # fmt: skip
        [csv] = sorted(folder.glob("*/metrics.csv"))
        logs = subprocess.run([*compose, "logs", "--no-color", "us-client", "eu-client"],
                              cwd=ROOT, env=env, capture_output=True, text=True).stdout  # fmt: skip
    finally:
        subprocess.run([*compose, "down", "-v"], cwd=ROOT, env=env, capture_output=True)
    startup = [
        float(up) - float(handler)
        for handler, up in re.findall(r"in ([\d.]+) s \(process up ([\d.]+) s\)", logs)
    ]
    per_round = round_seconds(csv)
    mean_startup = float(np.mean(startup)) if startup else float("nan")
    return {"seconds_per_round": per_round,
            "clientapp_startup_s": mean_startup}  # fmt: skip


def simulation_round(
    work: Path, regions: int, rows: int, epochs: int = 1, rounds: int = 3
) -> float:
    out = work / f"sim-{regions}"
    names = ",".join(f"r{i}" for i in range(regions))
    command = [sys.executable, "main.py", "--regions", names, "--rows", str(rows), "--rounds",
               str(rounds), "--local-epochs", str(epochs), "--out", str(out)]  # fmt: skip
    env = os.environ | {"FLAME_MLFLOW": "false", "TQDM_DISABLE": "1",
                        "FLAME_CACHE_DIR": str(work / "cache-sim")}  # fmt: skip
    subprocess.run(["rm", "-rf", str(out)], check=True)
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"simulation with {regions} regions failed:\n{proc.stderr[-3000:]}")
    return round_seconds(out / "metrics.csv")


def machine() -> str:
    import flwr
    import torch

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, flwr {flwr.__version__}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=Path("/tmp/flame-scale"))
    p.add_argument("--quick", action="store_true", help="600k rows, fewer regions (smoke test)")
    p.add_argument(
        "--only", choices=["deployment", "score"],
        help="deployment vs simulation rounds only, or flame score on the full-size file only",
    )  # fmt: skip
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only == "deployment":
        deployment_only(args)
        return
    if args.only == "score":
        score_only(args)
        return
    if args.child:
        name, *rest = args.child
        typed = [int(a) if a.isdigit() else a for a in rest]
        print(json.dumps(CHILDREN[name](*typed)))
        return
    run(args)


def deployment_only(args: argparse.Namespace) -> None:
    """The same run (default data: 200k rows, 2 regions, 2 local epochs, 4 rounds) in the
    simulation runtime, as local deployment processes (warm and cold ClientApp start, one and
    two messages per round) and in the compose stack (when Docker and the flame:latest image
    are there)."""
    args.work.mkdir(parents=True, exist_ok=True)
    sim = simulation_round(args.work, 2, 200_000, epochs=2, rounds=4)
    warm = deployment_round(args.work, 4, warm=True)
    cold = deployment_round(args.work, 4, warm=False)
    # what one message per round saves: the same run with a train and an evaluate message
    two = deployment_round(args.work, 4, extra={"FLAME_EVALUATE_IN_TRAIN": "false"})
    engine = subprocess.run(["docker", "image", "inspect", "flame:latest"], capture_output=True)
    dock = compose_round(args.work, 4) if engine.returncode == 0 else None
    lines = [
        f"simulation round: {sim:.2f} s",
        f"deployment round (local processes, warm ClientApp, one message per round): "
        f"{warm['seconds_per_round']:.2f} s; ClientApp start-up "
        f"{warm['clientapp_startup_s']:.2f} s per message",
        f"  per region and round: train task handler {warm['train_handler_s']:.2f} s "
        f"(validation, then training), ClientApp start-up {warm['clientapp_startup_s']:.2f} s, "
        f"the rest (messaging, polling, server) "
        f"{warm['seconds_per_round'] - warm['train_handler_s'] - warm['clientapp_startup_s']:.2f}"
        " s",
        f"deployment round (local processes, warm, train and evaluate messages, "
        f"FLAME_EVALUATE_IN_TRAIN=false): {two['seconds_per_round']:.2f} s",
        f"deployment round (local processes, cold, FLAME_WARM_CLIENTAPP=false): "
        f"{cold['seconds_per_round']:.2f} s; ClientApp start-up "
        f"{cold['clientapp_startup_s']:.2f} s per message",
        f"deployment round / simulation round (local processes): "
        f"{warm['seconds_per_round'] / sim:.2f} (cold: {cold['seconds_per_round'] / sim:.2f})",
        "deployment round / simulation round (compose): "
        + (f"{dock['seconds_per_round'] / sim:.2f} ({dock['seconds_per_round']:.2f} s per round; "
           f"ClientApp start-up {dock['clientapp_startup_s']:.2f} s per message)"
           if dock else "not measured (no Docker engine or no flame:latest image)"),
    ]  # fmt: skip
    text = f"{time.strftime('%Y-%m-%d')}, {machine()}\n\n" + "\n".join(lines)
    (args.out / "deployment.md").write_text(text + "\n")
    (args.out / "deployment.json").write_text(
        json.dumps(
            {
                "simulation_round": sim,
                "warm": warm,
                "cold": cold,
                "two_messages": two,
                "compose": dock,
            },
            indent=1,
        )
    )
    print(text)


def full_size_csv(args: argparse.Namespace, table: list[tuple[str, str, str]]) -> Path:
    """The Kaggle file at data/ if there, else a synthetic one of the same size (generated
    once into --work; the time it took goes into ``table``)."""
    from flame.data.synth import generate, write_csv

    args.work.mkdir(parents=True, exist_ok=True)
    rows = 600_000 if args.quick else FULL_ROWS
    csv = KAGGLE if KAGGLE.exists() and not args.quick else args.work / f"paysim-{rows}.csv"
    if not csv.exists():
        started = time.perf_counter()
        write_csv(generate(rows, seed=42), csv)
        table.append(("synthetic CSV generated", f"{time.perf_counter() - started:.1f} s",
                      f"{rows:,} rows"))  # fmt: skip
    return csv


def scoring(csv: Path, work: Path) -> tuple[dict, list[tuple[str, str, str]]]:
    """``flame score`` on ``csv``, then ``flame score --report``, each in its own process."""
    plain = child("score", csv, work, "plain")
    report = child("score", csv, work, "report")
    table = [
        ("flame score (streamed)", f"{plain['rows_per_s']:,.0f} rows/s",
         f"{plain['rows']:,} rows in {plain['seconds']:.1f} s, CSV in and out; "
         f"peak RSS {plain['rss_mb']:.0f} MB; target ≤ 1 GB"),
        ("flame score --report", f"{report['rows_per_s']:,.0f} rows/s",
         f"{report['seconds']:.1f} s incl. exact metrics over every row; "
         f"peak RSS {report['rss_mb']:.0f} MB"),
    ]  # fmt: skip
    return {"score": plain, "score_report": report}, table


def score_only(args: argparse.Namespace) -> None:
    from tabulate import tabulate

    table: list[tuple[str, str, str]] = []
    csv = full_size_csv(args, table)
    results, rows = scoring(csv, args.work)
    text = tabulate(table + rows, headers=["measure", "value", "notes"], tablefmt="github")
    text = f"{text}\n\ndata: {csv}\nmachine: {machine()}\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score.md").write_text(text)
    (args.out / "score.json").write_text(
        json.dumps(results | {"data": str(csv), "machine": machine()}, indent=2)
    )


def run(args: argparse.Namespace) -> None:
    from tabulate import tabulate

    rows = 600_000 if args.quick else FULL_ROWS
    results: dict[str, object] = {"machine": machine(), "rows": rows}
    table: list[tuple[str, str, str]] = []
    csv = full_size_csv(args, table)
    results["data"] = str(csv)
    cache = args.work / "cache-scale"
    subprocess.run(["rm", "-rf", str(cache)], check=True)

    prep = child("prepare", csv, cache)
    load = child("load", csv, cache)
    flame = child("flame-train", csv, cache, 1)
    plain = child("plain-train", csv, cache, 1)
    results |= {"prepare": prep, "load": load, "flame_train": flame, "plain_train": plain}
    us = prep["summary"]["us"]
    table += [
        ("preparation from CSV", f"{prep['seconds']:.1f} s",
         f"{rows:,} rows -> test + {len(prep['summary']) - 1} regions; target ≤ 20 s; "
         f"peak RSS {prep['rss_mb']:.0f} MB"),
        ("region load from cache", f"{load['seconds']:.2f} s",
         f"{load['rows']:,} training rows of 'us'; target ≤ 2 s"),
        ("local training, Flame ClientApp", f"{flame['rows'] / flame['seconds']:,.0f} rows/s",
         f"{flame['seconds']:.1f} s, 1 epoch incl. model and reply; best of {REPEATS}"),
        ("local training, plain PyTorch", f"{plain['rows'] / plain['seconds']:,.0f} rows/s",
         f"{plain['seconds']:.1f} s, 1 epoch; best of {REPEATS}"),
        ("training time ratio Flame / plain", f"{flame['seconds'] / plain['seconds']:.2f}×",
         "target ≤ 1.15×"),
        ("peak RSS, region process (train)", f"{flame['rss_mb']:.0f} MB",
         f"{us['rows']:,} region rows; target ≤ 1 GB; plain loop {plain['rss_mb']:.0f} MB"),
    ]  # fmt: skip

    overhead = child("flower-overhead", 6)
    dep = deployment_round(args.work, 4)
    results |= {"flower_overhead": overhead, "deployment": dep}
    table += [
        ("Flower round overhead (simulation)", f"{overhead['seconds_per_round']:.2f} s",
         "no-op app, tiny model, no data, 2 nodes"),
        ("deployment round (local processes)", f"{dep['seconds_per_round']:.1f} s",
         f"default data, 2 SuperNodes, mean of rounds 2-4; target ≤ 8 s; "
         f"final PR-AUC {dep['final_pr_auc']:.3f}"),
        ("  of which ClientApp process start-up", f"{dep['clientapp_startup_s']:.1f} s",
         "per message, before the handler runs (Flower's own imports)"),
        ("bytes per round (all regions)", f"{dep['bytes_sent']:,.0f} B up",
         f"{dep['bytes_received']:,.0f} B down"),
    ]  # fmt: skip
    sim = {}
    for n in (2, 10) if args.quick else (2, 10, 50):
        sim[n] = simulation_round(args.work, n, 200_000)
        table.append((f"simulation round, {n} regions", f"{sim[n]:.1f} s", "200k rows, 1 epoch"))
    results["simulation"] = sim
    scored, score_table = scoring(csv, args.work)
    results |= scored
    table += score_table

    text = tabulate(table, headers=["measure", "value", "notes"], tablefmt="github")
    print(text)
    print(f"\nmachine: {results['machine']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.md").write_text(f"{text}\n\nmachine: {results['machine']}\n")
    (args.out / "scale.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
