from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pandas as pd

from flame.settings import load_settings
from flame.tracking import CSV_COLUMNS, Tracker


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


def test_unreachable_mlflow_does_not_break(tmp_path: Path) -> None:
    settings = load_settings(mlflow=True, mlflow_tracking_uri="http://127.0.0.1:9")
    tracker = Tracker(settings, tmp_path, {})
    assert "mlflow" not in tracker.sinks
    tracker.log("server", 1, "evaluate", {"loss": 0.1})
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
    tracker.log("server", 2, "evaluate", {"pr_auc": 0.95})
    (tmp_path / "a.txt").write_text("x")
    tracker.artifacts([tmp_path / "a.txt"])
    run_id = tracker.sinks["mlflow"].run_id
    tracker.close()
    api = f"{mlflow_server}/api/2.0/mlflow/metrics/get-history"
    query = f"{api}?run_id={run_id}&metric_key=server/pr_auc"
    with urllib.request.urlopen(query) as reply:
        history = json.load(reply)["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(1, 0.9), (2, 0.95)]
    with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={run_id}") as r:
        run = json.load(r)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"key": "seed", "value": "3"} in run["data"]["params"]
