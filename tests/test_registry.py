"""The MLflow model lifecycle: a logged pyfunc model on raw rows, the registry and its champion."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from flame.cli import main
from flame.data.synth import generate, write_csv
from flame.model.net import build_model, new_card, save_model
from flame.model.score import score_frame
from flame.track import registry, tracking

TEST_SET = "abc"


class Version:
    def __init__(self, version: str, pr_auc: float, test_set: str = TEST_SET) -> None:
        self.version = version
        self.tags = {"server_test_pr_auc": f"{pr_auc:.6f}", "test_set": test_set}


def test_champion_moves_only_to_a_better_model_on_the_same_test_set() -> None:
    assert registry.champion_decision(0.9, TEST_SET, None).startswith("champion")
    assert registry.champion_decision(0.91, TEST_SET, Version("1", 0.9)).startswith("champion")
    worse = registry.champion_decision(0.9, TEST_SET, Version("1", 0.9))
    assert worse.startswith("not champion") and "does not beat version 1" in worse
    # seen in a real run: PR-AUC 1.0000000000000002 against a stored 1.000000 is a tie
    tie = registry.champion_decision(1.0 + 2e-16, TEST_SET, Version("1", 1.0))
    assert tie.startswith("not champion")
    other = registry.champion_decision(0.99, "def", Version("1", 0.9))
    assert other.startswith("not champion") and "different test set" in other
    assert registry.champion_decision(float("nan"), TEST_SET, None).startswith("not champion")


def test_test_set_digest_ignores_the_balance_columns_but_not_the_rows() -> None:
    x, y = np.random.default_rng(0).random((50, 6), dtype=np.float32), np.zeros(50, np.float32)
    assert tracking.test_set_digest(x, y, 4) == tracking.test_set_digest(x[:, :4], y, 4)
    assert tracking.test_set_digest(x, y, 4) != tracking.test_set_digest(x[1:], y[1:], 4)


def test_model_input_needs_every_paysim_column() -> None:
    rows = registry.example_rows()
    assert "isFraud" not in rows and len(registry.paysim_frame(rows)) == len(rows)
    with pytest.raises(ValueError, match=r"lack the PaySim column.* amount"):
        registry.paysim_frame(rows.drop(columns=["amount"]))


def _model(folder: Path, pr_auc: float, seed: int) -> tuple[Path, object]:
    card = new_card(False, [8], 0.3)
    card.metrics = {"pr_auc": pr_auc}
    path = folder / f"model{seed}.pt"
    save_model(path, build_model(card, seed=seed), card)
    return path, card


def test_registry_versions_champion_and_flame_score_by_uri(
    tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("registry-test")
    for seed, pr_auc in ((1, 0.5), (2, 0.4), (3, 0.6)):
        path, card = _model(tmp_path, pr_auc, seed)
        run_id = client.create_run(experiment).info.run_id
        registry.log_model(run_id, path, card, "flame-fraud", {"test_set": TEST_SET})
    champion = client.get_model_version_by_alias("flame-fraud", "champion")
    assert champion.version == "3"
    second = client.get_model_version("flame-fraud", "2")
    assert second.tags["champion_decision"].startswith("not champion")
    # the served model and `flame score --model models:/...` give the numbers of model.pt
    frame = generate(400, seed=4, fraud_rate=0.05)
    local = score_frame(tmp_path / "model3.pt", frame)
    served = mlflow.pyfunc.load_model("models:/flame-fraud@champion").predict(
        frame.drop(columns=["isFraud", "isFlaggedFraud"]).assign(type=frame["type"].astype(str))
    )
    assert list(served.columns) == ["fraud_probability", "is_fraud_predicted"]
    assert served["fraud_probability"].to_numpy() == pytest.approx(local["fraud_probability"])
    csv = tmp_path / "rows.csv"
    write_csv(frame, csv)
    monkeypatch.setenv("FLAME_MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "scored.csv"
    assert (
        main(["score", str(csv), "--model", "models:/flame-fraud@champion", "--out", str(out)]) == 0
    )
    scored = pd.read_csv(out)
    assert scored["fraud_probability"].to_numpy() == pytest.approx(local["fraud_probability"])
    capsys.readouterr()
    assert main(["score", str(csv), "--model", "models:/flame-fraud@nope", "--out", str(out)]) == 2
    assert "models:/flame-fraud@nope" in capsys.readouterr().err
