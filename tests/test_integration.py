"""Real Flower runs: simulation via main.py and `flwr run .`, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch

from flame.data.synth import generate
from flame.model import metrics as fm
from flame.model.net import load_model
from flame.model.score import score_frame
from flame.ops.local_deployment import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def run_main(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT, env=os.environ | (env or {}), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def evaluate_rows(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "metrics.csv")
    return table[table["stage"] == "evaluate"]


def test_two_round_simulation_on_synthetic_data(tmp_path: Path) -> None:
    """~20k synthetic rows (1 % fraud so the test set holds ~40 frauds), 2 regions, 2 rounds."""
    out = tmp_path / "run"
    proc = run_main(
        ["--rounds", "2", "--regions", "us,eu", "--rows", "20000", "--fraud-rate", "0.01",
         "--local-epochs", "1", "--out", str(out)]
    )  # fmt: skip
    rows = evaluate_rows(out)
    for kind in ("server", "client_aggregate", "client:us", "client:eu"):
        assert set(rows.loc[rows["kind"] == kind, "round"]) >= {1, 2}, kind
    assert set(rows.loc[rows["kind"] == "server", "round"]) == {0, 1, 2}
    final = rows[(rows["kind"] == "server") & (rows["round"] == 2)].iloc[0]
    assert final["roc_auc"] > 0.9
    assert (out / "model.pt").exists() and (out / "pr_curve.png").exists()
    assert any((out / "tensorboard").iterdir())
    assert "client:us" in proc.stdout and "server" in proc.stdout  # the per-round table
    # the saved model is the latest round within one standard error of the best pooled client
    # *validation* PR-AUC (flame.model.metrics.pr_auc_margin)
    pooled = rows[rows["kind"] == "client_aggregate"].sort_values("round")
    top = pooled["pr_auc"].max()
    margin = fm.pr_auc_margin(top, float(pooled["tp"].iloc[0] + pooled["fn"].iloc[0]))
    best = int(pooled.loc[pooled["pr_auc"] >= top - margin, "round"].max())
    _, card = load_model(out / "model.pt")
    assert card.selected_round == best
    assert card.pretrained_rows == 20_000  # the warm start (FLAME_PRETRAIN_ROWS, conftest)
    selected = rows[rows["kind"] == "selected"].iloc[0]
    server_best = rows[(rows["kind"] == "server") & (rows["round"] == best)].iloc[0]
    assert selected["round"] == best and selected["pr_auc"] == pytest.approx(server_best["pr_auc"])
    assert card.metrics["pr_auc"] == pytest.approx(selected["pr_auc"])
    # the alert budget (FLAME_ALERT_RATE's default): the stored threshold is the cut of the
    # selected model's pooled validation histogram (kept in its card) closest to 0.5 % alerts
    assert card.alert_rate == 0.005 and card.drop_balance_features  # the defaults
    counts = card.validation_score_counts
    assert len(card.validation_score_edges) == len(counts) + 1 == fm.BINS + 1
    assert sum(counts) == rows.loc[(rows["kind"] == "client_aggregate") & (rows["round"] == best),
                                   "num_examples"].iloc[0]  # fmt: skip
    assert card.threshold == fm.budget_threshold(counts, [0] * len(counts), 0.005)
    for kind in ("server", "client_aggregate", "client:us", "selected"):
        figures = rows.loc[(rows["kind"] == kind) & (rows["round"] >= 1), fm.ALERT_FIGURES]
        assert figures.notna().all().all(), kind
    assert card.metrics["precision_at_budget"] == pytest.approx(selected["precision_at_budget"])

    scored = tmp_path / "scored.csv"
    data = tmp_path / "fresh.csv"
    subprocess.run([sys.executable, "-m", "flame.cli", "data", "synth", "--rows", "2000",
                    "--seed", "99", "--out", str(data)], check=True, cwd=ROOT)  # fmt: skip
    subprocess.run([sys.executable, "-m", "flame.cli", "score", str(data), "--model",
                    str(out / "model.pt"), "--out", str(scored)], check=True, cwd=ROOT)  # fmt: skip
    assert len(pd.read_csv(scored)) == 2000


def test_federated_run_on_real_paysim_rows(tmp_path: Path, real_dir: Path) -> None:
    """The three real samples, pooled and split into us/eu with a held-out test set (the
    model with the balance columns: the one that separates fraud almost perfectly)."""
    out = tmp_path / "real"
    run_main(["--rounds", "3", "--data", str(real_dir), "--with-balances", "--out", str(out)])
    rows = evaluate_rows(out)
    final = rows[(rows["kind"] == "server") & (rows["round"] == 3)].iloc[0]
    assert final["num_examples"] > 2000
    assert final["pr_auc"] > 0.9, final.to_dict()


def test_the_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    """Two runs of one command: bit-identical weights, losses and metrics (#13), whether the
    regions score each round's model in an evaluate message or in the next round's train
    reply (FLAME_EVALUATE_IN_TRAIN: rows are then written later, not different)."""
    args = ["--rounds", "3", "--rows", "10000", "--fraud-rate", "0.02", "--local-epochs", "1"]
    runs = [tmp_path / "a", tmp_path / "b"]
    for out, in_train in zip(runs, ("true", "false"), strict=True):
        run_main([*args, "--out", str(out)], {"FLAME_EVALUATE_IN_TRAIN": in_train})
    (model_a, card_a), (model_b, card_b) = (load_model(out / "model.pt") for out in runs)
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key
    assert card_a.threshold == card_b.threshold and card_a.metrics == card_b.metrics
    columns = ["kind", "round", "stage", "loss", "roc_auc", "pr_auc", "threshold", "tp", "fp"]
    a, b = (
        pd.read_csv(out / "metrics.csv")[columns].sort_values(columns[:3], ignore_index=True)
        for out in runs
    )
    pd.testing.assert_frame_equal(a, b)
    assert len(a.query("stage == 'evaluate' and kind == 'client_aggregate'")) == 3


def test_mlflow_receives_the_federated_run(tmp_path: Path, mlflow_server: str) -> None:
    out = tmp_path / "tracked"
    run_main(
        ["--rounds", "2", "--rows", "20000", "--fraud-rate", "0.01", "--local-epochs", "1",
         "--out", str(out)],
        {"FLAME_MLFLOW": "true", "FLAME_MLFLOW_TRACKING_URI": mlflow_server},
    )  # fmt: skip
    search = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [_experiment_id(mlflow_server)]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(search) as reply:
        [run] = json.load(reply)["runs"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "tracked"
    keys = {m["key"] for m in run["data"]["metrics"]}
    assert {"server/pr_auc", "client_aggregate/f1", "client_us/roc_auc", "client_eu/recall"} <= keys
    run_id = run["info"]["run_id"]
    for key in ("server/pr_auc", "client_eu/f1"):
        url = f"{mlflow_server}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}"
        with urllib.request.urlopen(url) as reply:
            steps = {m["step"] for m in json.load(reply)["metrics"]}
        assert {1, 2} <= steps, key
    url = f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={run_id}"
    with urllib.request.urlopen(url) as reply:
        files = {f["path"] for f in json.load(reply)["files"]}
    assert {"model.pt", "roc_curve.png", "pr_curve.png", "metrics.csv"} <= files
    # the model is a logged MLflow model, registered, and the first version is the champion
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    inputs = mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs
    profiles = {i.dataset.name: json.loads(i.dataset.profile) for i in inputs}
    assert set(profiles) == {"server-test", "region-us", "region-eu"}  # sizes, never rows
    assert all(p["num_rows"] > p["num_frauds"] > 0 for p in profiles.values())
    version = mlflow.MlflowClient().get_model_version_by_alias("flame-fraud", "champion")
    assert version.version == "1" and version.tags["champion_decision"].startswith("champion")
    _, card = load_model(out / "model.pt")
    stored = float(version.tags["server_test_pr_auc"])  # to 6 decimals
    assert stored == pytest.approx(card.metrics["pr_auc"], abs=5e-7)
    frame = generate(500, seed=9, fraud_rate=0.05)
    served = mlflow.pyfunc.load_model("models:/flame-fraud@champion").predict(
        frame.assign(type=frame["type"].astype(str))  # labels may come along: ignored
    )
    local = score_frame(out / "model.pt", frame)
    assert served["fraud_probability"].to_numpy() == pytest.approx(local["fraud_probability"])


def _experiment_id(uri: str) -> str:
    url = f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=flame"
    with urllib.request.urlopen(url) as reply:
        return json.load(reply)["experiment"]["experiment_id"]


def test_flwr_run_simulation(tmp_path: Path) -> None:
    """`flwr run .` on Flower's managed local SuperLink, with the same apps."""
    flwr = Path(sys.executable).parent / "flwr"
    env = os.environ | {
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLAME_OUT_DIR": str(tmp_path / "flwr-run"),  # a server setting: from its environment
        "FLAME_LOCAL_EPOCHS": "3",  # a run setting: the run config's wins, and this is named
        "PATH": f"{flwr.parent}:{os.environ['PATH']}",
        # this test's own managed SuperLink: never one left running by another run
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
    }
    try:
        proc = subprocess.run(
            [str(flwr), "run", ".", "--stream", "--federation-config", "num-supernodes=2",
             "--run-config", "num-server-rounds=2 local-epochs=1 synth-rows=20000",
             "--run-config", "synth-fraud-rate=0.01"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        _stop_local_superlink(tmp_path / "flwr-home")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FLAME_LOCAL_EPOCHS=3 in this process's environment is ignored" in proc.stdout
    rows = evaluate_rows(tmp_path / "flwr-run")
    assert set(rows.loc[rows["kind"] == "client:eu", "round"]) == {1, 2}
    assert rows.loc[(rows["kind"] == "server") & (rows["round"] == 2), "roc_auc"].iloc[0] > 0.9


def _stop_local_superlink(flwr_home: Path) -> None:
    """`flwr run` leaves a background SuperLink; stop the one using this FLWR_HOME."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in args and str(flwr_home) in _environ(proc.name):
            os.kill(int(proc.name), signal.SIGTERM)


def _environ(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_a_new_run_never_overwrites_an_earlier_run_folder(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "metrics.csv").write_text("kept\n")
    proc = subprocess.run(
        [sys.executable, "main.py", "--rounds", "1", "--rows", "2000", "--out", str(earlier)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "FLAME_OUT_DIR" in proc.stderr and "earlier run (metrics.csv)" in proc.stderr
    assert (earlier / "metrics.csv").read_text() == "kept\n"


def test_a_test_set_without_fraud_is_refused_before_training(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "main.py", "--rounds", "1", "--rows", "500", "--fraud-rate", "0.001",
         "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server's test set: its") and "hold no fraud" in last
    assert not (tmp_path / "run" / "model.pt").exists()
