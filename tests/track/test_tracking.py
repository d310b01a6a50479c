from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from flame.settings import load_settings
from flame.track.tracking import CSV_COLUMNS, Tracker
from tests.conftest import MlflowServer


def test_csv_and_tensorboard(tmp_path: Path) -> None:
    tracker = Tracker(load_settings(), tmp_path, {"seed": 1})
    assert set(tracker.sinks) == {"csv", "tensorboard"}
    tracker.log("server", 1, "evaluate", {"loss": 0.5, "f1": 0.7, "roc_auc": float("nan")})
    tracker.log("client:us", 1, "train", {"loss": 0.4, "num_examples": 10})
    tracker.close()
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert list(table.columns) == CSV_COLUMNS
    assert table["kind"].tolist() == ["server", "client:us"]
    assert table.loc[0, "f1"] == 0.7 and pd.isna(table.loc[0, "roc_auc"])
    assert any((tmp_path / "tensorboard").iterdir())


def test_the_alert_figures_are_columns_of_metrics_csv(tmp_path: Path) -> None:
    figures = {
        "precision_at_budget": 0.4, "recall_at_budget": 0.6, "alert_rate_at_budget": 0.005,
        "recall_at_1pct_fpr": 0.8, "amount_recall": 0.7,
    }  # fmt: skip
    tracker = Tracker(load_settings(tensorboard=False), tmp_path, {})
    tracker.log("server", 1, "evaluate", figures | {"hist_amount": [1.0, 2.0]})
    tracker.close()
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert {k: row[k] for k in figures} == figures
    assert "hist_amount" not in row


def test_unreachable_mlflow_does_not_break(tmp_path: Path) -> None:
    settings = load_settings(mlflow=True, mlflow_tracking_uri="http://127.0.0.1:9")
    tracker = Tracker(settings, tmp_path, {})
    assert tracker.sinks["mlflow"].run_id is None  # queueing, not connected
    tracker.log("server", 1, "evaluate", {"loss": 0.1})
    tracker.commit()
    tracker.close()
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 1


def test_switches_turn_sinks_off(tmp_path: Path) -> None:
    tracker = Tracker(load_settings(csv=False, tensorboard=False), tmp_path, {})
    assert tracker.sinks == {}
    tracker.log("server", 0, "evaluate", {"loss": 1.0})
    assert not (tmp_path / "metrics.csv").exists()


def test_real_mlflow_server_receives_metrics(tmp_path: Path, mlflow_server: str) -> None:
    settings = load_settings(mlflow=True, mlflow_tracking_uri=mlflow_server)
    tracker = Tracker(settings, tmp_path / "run1", {"seed": 3})
    tracker.log("server", 1, "evaluate", {"pr_auc": 0.9})
    tracker.log("server", 2, "evaluate", {"pr_auc": 0.95, "precision_at_budget": 0.4})
    tracker.log("client_aggregate", 2, "evaluate", {"amount_recall": 0.7, "hist_pos": [1, 2]})
    (tmp_path / "a.txt").write_text("x")
    tracker.artifacts([tmp_path / "a.txt"])
    run_id = tracker.sinks["mlflow"].run_id
    tracker.close()
    api = f"{mlflow_server}/api/2.0/mlflow/metrics/get-history"
    query = f"{api}?run_id={run_id}&metric_key=server/pr_auc"
    with urllib.request.urlopen(query) as reply:
        history = json.load(reply)["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(1, 0.9), (2, 0.95)]
    assert _history(mlflow_server, run_id, "server/precision_at_budget") == [(2, 0.4)]
    assert _history(mlflow_server, run_id, "client_aggregate/amount_recall") == [(2, 0.7)]
    with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={run_id}") as r:
        run = json.load(r)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"key": "seed", "value": "3"} in run["data"]["params"]


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    api = f"{uri}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}"
    with urllib.request.urlopen(api) as reply:
        return sorted((m["step"], m["value"]) for m in json.load(reply).get("metrics", []))


def test_mlflow_outage_queues_metrics_and_delivers_them_on_return(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        settings = load_settings(mlflow=True, mlflow_tracking_uri=server.uri)
        tracker = Tracker(settings, tmp_path / "run", {})
        tracker.log("server", 1, "evaluate", {"pr_auc": 0.5})
        tracker.commit()
        server.stop()  # MLflow goes down mid-run
        for rnd, value in ((2, 0.6), (3, 0.7)):
            tracker.log("server", rnd, "evaluate", {"pr_auc": value})
            tracker.commit()
        sink = tracker.sinks["mlflow"]  # still on, not switched off: rounds wait in the CSV
        assert sink.delivered == {("server/pr_auc", 1)}
        server.start()  # same port and store
        tracker.log("server", 4, "evaluate", {"pr_auc": 0.8})
        tracker.close()
        history = _history(server.uri, sink.run_id, "server/pr_auc")
        assert history == [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8)]
        assert list(pd.read_csv(tmp_path / "run" / "metrics.csv")["round"]) == [1, 2, 3, 4]
    finally:
        server.stop()


def test_a_resumed_run_delivers_each_checkpointed_round_once(
    tmp_path: Path, mlflow_server: str
) -> None:
    """Killed after round 2 was checkpointed but before it reached MLflow, with half of round 3
    in the CSV: the resumed run delivers round 2 once and never the half-finished round 3."""
    settings = load_settings(mlflow=True, mlflow_tracking_uri=mlflow_server)
    first = Tracker(settings, tmp_path / "run", {})
    for rnd in (1, 2, 3):
        first.log("server", rnd, "evaluate", {"pr_auc": rnd / 10})
        if rnd == 1:
            first.commit()
    run_id = first.sinks["mlflow"].run_id
    assert _history(mlflow_server, run_id, "server/pr_auc") == [(1, 0.1)]
    resumed = Tracker(settings, tmp_path / "run", {}, resume_after=2)  # the killed run's folder
    assert resumed.sinks["mlflow"].run_id == run_id
    resumed.log("server", 3, "evaluate", {"pr_auc": 0.35})
    resumed.commit()
    resumed.close()
    assert _history(mlflow_server, run_id, "server/pr_auc") == [(1, 0.1), (2, 0.2), (3, 0.35)]


def test_backfill_delivers_a_run_logged_while_mlflow_was_down(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "mlflow")  # not started: down for the whole run
    settings = load_settings(mlflow=True, mlflow_tracking_uri=server.uri)
    tracker = Tracker(settings, tmp_path / "run", {})
    for rnd in (1, 2, 3):
        tracker.log("server", rnd, "evaluate", {"pr_auc": rnd / 10, "loss": 1.0})
        tracker.log("client:us", rnd, "evaluate", {"pr_auc": rnd / 20})
    tracker.close()
    server.start()
    try:
        env = os.environ | {"FLAME_MLFLOW_TRACKING_URI": server.uri}
        command = [sys.executable, "-m", "flame.cli", "mlflow-backfill", str(tmp_path / "run")]
        first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert "sent 9 metric values" in first.stdout
        again = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert "sent 0 metric values" in again.stdout  # idempotent
        run_id = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"]
        assert _history(server.uri, run_id, "server/pr_auc") == [(1, 0.1), (2, 0.2), (3, 0.3)]
        assert _history(server.uri, run_id, "client_us/pr_auc")[-1] == (3, 0.15)
    finally:
        server.stop()


def test_without_a_server_runs_go_to_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No FLAME_MLFLOW_TRACKING_URI and nothing on the local port: ./mlflow-data, no queueing."""
    from mlflow.tracking import MlflowClient

    from flame.track import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "LOCAL_SERVER", "http://127.0.0.1:9")  # nothing listens
    settings = load_settings(mlflow=True)
    tracker = Tracker(settings, tmp_path / "run1", {"seed": 3})
    tracker.log("server", 1, "evaluate", {"pr_auc": 0.9})
    (tmp_path / "a.txt").write_text("x")
    tracker.artifacts([tmp_path / "a.txt"])
    sink = tracker.sinks["mlflow"]
    assert sink.uri == f"sqlite:///{tmp_path / 'mlflow-data' / 'mlflow.db'}"
    assert sink.delivered == {("server/pr_auc", 1)}  # delivered at once
    assert sink.url.startswith("http://127.0.0.1:9/#/experiments/")  # make mlflow-ui's address
    tracker.close()
    client = MlflowClient(sink.uri)
    experiment = client.get_experiment_by_name("flame")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["server/pr_auc"] == 0.9 and run.info.status == "FINISHED"
    assert (tmp_path / "mlflow-data" / "artifacts").is_dir()
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["a.txt"]


def test_values_count_as_delivered_only_once_mlflow_took_them(tmp_path: Path) -> None:
    from flame.track.tracking import CsvSink, deliver

    table = CsvSink(tmp_path / "metrics.csv")
    table.log("server", 1, "evaluate", {"pr_auc": 0.5, "loss": 0.1})
    table.close()

    class Flaky:  # MLflow that goes down during the first delivery
        def __init__(self) -> None:
            self.calls, self.logged = 0, []

        def log_batch(self, run_id, metrics):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("MLflow went down")
            self.logged += [(m.key, m.step, m.value) for m in metrics]

    client, sent = Flaky(), set()
    with pytest.raises(ConnectionError):
        deliver(client, "run", tmp_path / "metrics.csv", sent)
    assert sent == set()  # nothing counts as sent: the next sync sends it all
    assert deliver(client, "run", tmp_path / "metrics.csv", sent) == 2
    assert sorted(client.logged) == [("server/loss", 1, 0.1), ("server/pr_auc", 1, 0.5)]
    assert deliver(client, "run", tmp_path / "metrics.csv", sent) == 0


def test_the_pr_curve_marks_the_alert_budgets_operating_point(tmp_path: Path) -> None:
    import numpy as np

    from flame.track import plots

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.05).astype(float)
    logits = rng.normal(0, 1, 2000) + 3 * y
    point = plots.OperatingPoint(recall=0.4, precision=0.8, budget=0.005, realised=0.0049)
    assert point.label == "alert budget 0.50% (realised 0.49%): P 0.800, R 0.400"
    plain = plots.curves(logits, y, tmp_path / "plain", "t")
    marked = plots.curves(logits, y, tmp_path / "marked", "t", point)
    assert [p.name for p in marked] == ["roc_curve.png", "pr_curve.png"]
    assert marked[0].read_bytes() == plain[0].read_bytes()  # the ROC curve has no marker
    assert marked[1].read_bytes() != plain[1].read_bytes()
