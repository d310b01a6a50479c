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
    def __init__(
        self, version: str, pr_auc: float, test_set: str = TEST_SET,
        precision: float | None = None, alert_rate: str | None = None,
    ) -> None:  # fmt: skip
        self.version = version
        self.tags = {"server_test_pr_auc": f"{pr_auc:.6f}", "test_set": test_set}
        if precision is not None:
            self.tags["server_test_precision_at_budget"] = f"{precision:.6f}"
        if alert_rate is not None:
            self.tags["alert_rate"] = alert_rate


def new(pr_auc: float, precision: float | None = None, test_set: str = TEST_SET) -> dict[str, str]:
    """The tags a new version is judged by, as register() stores them."""
    card = new_card(True, [8], 0.5)
    card.metrics = {"pr_auc": pr_auc}
    if precision is not None:
        card.alert_rate, card.metrics["precision_at_budget"] = 0.005, precision
    return {"test_set": test_set} | registry.scores(card)


def test_champion_moves_only_to_a_better_model_on_the_same_test_set() -> None:
    assert registry.champion_decision(new(0.9), None).startswith("champion")
    assert registry.champion_decision(new(0.91), Version("1", 0.9)).startswith("champion")
    worse = registry.champion_decision(new(0.9), Version("1", 0.9))
    assert worse.startswith("not champion") and "does not beat version 1" in worse
    # seen in a real run: PR-AUC 1.0000000000000002 against a stored 1.000000 is a tie
    tie = registry.champion_decision(new(1.0 + 2e-16), Version("1", 1.0))
    assert tie.startswith("not champion")
    other = registry.champion_decision(new(0.99, test_set="def"), Version("1", 0.9))
    assert other.startswith("not champion") and "different test set" in other
    assert registry.champion_decision(new(float("nan")), None).startswith("not champion")


def test_with_an_alert_budget_the_champion_moves_only_when_both_figures_improve() -> None:
    held = Version("3", 0.80, precision=0.40, alert_rate="0.005")
    both = registry.champion_decision(new(0.81, 0.41), held)
    assert both.startswith("champion") and "precision at the budget 0.4100" in both
    pr_only = registry.champion_decision(new(0.85, 0.39), held)  # better PR-AUC, fewer hits
    assert pr_only.startswith("not champion") and "precision at the budget 0.3900" in pr_only
    precision_only = registry.champion_decision(new(0.79, 0.60), held)
    assert precision_only.startswith("not champion") and "test PR-AUC 0.7900" in precision_only
    tied = registry.champion_decision(new(0.81, 0.40), held)
    assert tied.startswith("not champion")
    assert registry.champion_decision(new(0.81, float("nan")), held).startswith("not champion")
    # a champion chosen without a budget (or for another) is not comparable either way
    unbudgeted = registry.champion_decision(new(0.99, 0.99), Version("2", 0.5))
    assert unbudgeted.startswith("not champion") and "alert budget 0, this one for 0.005" in (
        unbudgeted
    )
    assert registry.champion_decision(new(0.99), held).startswith("not champion")
    assert registry.champion_decision(new(0.81), Version("2", 0.8, alert_rate="0")).startswith(
        "champion"
    )


def test_test_set_digest_ignores_the_balance_columns_but_not_the_rows() -> None:
    x, y = np.random.default_rng(0).random((50, 6), dtype=np.float32), np.zeros(50, np.float32)
    assert tracking.test_set_digest(x, y, 4) == tracking.test_set_digest(x[:, :4], y, 4)
    assert tracking.test_set_digest(x, y, 4) != tracking.test_set_digest(x[1:], y[1:], 4)


def test_model_input_needs_every_paysim_column() -> None:
    rows = registry.example_rows()
    assert "isFraud" not in rows and len(registry.paysim_frame(rows)) == len(rows)
    with pytest.raises(ValueError, match=r"lack the PaySim column.* amount"):
        registry.paysim_frame(rows.drop(columns=["amount"]))


def _model(folder: Path, pr_auc: float, seed: int, precision: float = 0.5) -> tuple[Path, object]:
    card = new_card(False, [8], 0.3)
    card.alert_rate, card.metrics = 0.005, {"pr_auc": pr_auc, "precision_at_budget": precision}
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
    # version 4 has the best PR-AUC but a lower precision at the budget than version 3
    for seed, pr_auc, precision in ((1, 0.5, 0.3), (2, 0.4, 0.5), (3, 0.6, 0.4), (4, 0.7, 0.2)):
        path, card = _model(tmp_path, pr_auc, seed, precision)
        run_id = client.create_run(experiment).info.run_id
        registry.log_model(run_id, path, card, "flame-fraud", {"test_set": TEST_SET})
    champion = client.get_model_version_by_alias("flame-fraud", "champion")
    assert champion.version == "3"
    assert champion.tags["server_test_precision_at_budget"] == "0.400000"
    for version in ("2", "4"):
        tags = client.get_model_version("flame-fraud", version).tags
        assert tags["champion_decision"].startswith("not champion"), version
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
