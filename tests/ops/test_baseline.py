"""The central baseline: the same model, step plan and selection rule as a federated run,
trained on the union of the regions' rows and scored on the server's held-out test set."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flame.data.partition import heldout_arrays, region_arrays
from flame.data.synth import generate, write_csv
from flame.model import metrics as fm
from flame.model.metrics import DegenerateDataError
from flame.model.net import load_model
from flame.model.train import Plan, predict_logits
from flame.ops.baseline import CENTRAL, run_baseline, union
from flame.settings import FlameSettings, load_settings

Record = tuple[str, int, str, dict[str, Any]]


class Sink:
    """A MetricsSink that keeps every record."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        self.records.append((kind, rnd, stage, dict(metrics)))

    def evaluations(self) -> dict[int, dict[str, Any]]:
        """Each round's validation figures."""
        return {r: m for k, r, s, m in self.records if k == CENTRAL and s == "evaluate"}


def _settings(**overrides: Any) -> FlameSettings:
    """Small synthetic data, random initial weights and short rounds: a second a run."""
    small = {
        "synth_rows": 4000, "synth_fraud_rate": 0.05, "pretrain_rows": 0,
        "num_server_rounds": 3, "local_epochs": 1, "min_local_steps": 20,
    }  # fmt: skip
    return load_settings(**(small | overrides))


def _no_fraud_csv(path: Path) -> Path:
    frame = generate(3000, seed=3, fraud_rate=0.05)
    frame["isFraud"] = 0
    write_csv(frame, path)
    return path


def test_union_is_every_regions_rows_of_a_split_in_region_order_without_the_test_set() -> None:
    data = _settings(regions=["us", "eu", "apac"]).data_spec()
    sizes = {}
    for split in ("train", "val"):
        x, y = union(data, split)
        parts = [region_arrays(data, r)[split] for r in data.regions]
        assert torch.equal(x, torch.from_numpy(np.concatenate([p[0] for p in parts])))
        assert torch.equal(y, torch.from_numpy(np.concatenate([p[1] for p in parts])))
        assert x.dtype == torch.float32 and len(x) == len(y)
        sizes[split] = len(y)
    # every row is in exactly one place: a region's training or validation rows, or the test set
    assert sizes["train"] + sizes["val"] + len(heldout_arrays(data)[1]) == 4000
    assert min(sizes.values()) > 0


def test_the_saved_model_scores_the_test_set_as_the_returned_metrics_say(tmp_path: Path) -> None:
    settings, out = _settings(), tmp_path / "central"
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        result = run_baseline(settings, out)
        assert torch.get_num_threads() == settings.torch_threads == 1
    finally:
        torch.set_num_threads(before)
    model, card = load_model(out / "model.pt")
    x_test, y_test = heldout_arrays(settings.data_spec())
    logits = predict_logits(model, torch.from_numpy(x_test))
    again = fm.exact_metrics(logits, y_test, card.threshold)
    assert {k: result[k] for k in again} == pytest.approx(again, nan_ok=True)
    assert result["num_examples"] == len(y_test)
    assert card.metrics == pytest.approx({k: float(v) for k, v in result.items()}, nan_ok=True)
    assert card.selected_round == result["selected_round"] in (1, 2, 3)
    assert card.threshold == result["threshold"]
    assert card.pretrained_rows == 0 and card.alert_rate == settings.alert_rate == 0.005
    assert card.drop_balance_features and card.hidden_sizes == [64, 32]
    # the scorer's drift reference: the selected round's histogram of every validation row
    assert card.validation_score_edges == fm.probability_edges(fm.BINS)
    assert len(card.validation_score_counts) == fm.BINS
    assert sum(card.validation_score_counts) == len(union(settings.data_spec(), "val")[1])


def test_each_round_logs_training_and_validation_then_the_selected_test_figures() -> None:
    settings, sink = _settings(), Sink()
    result = run_baseline(settings, sink=sink)
    data = settings.data_spec()
    rows, val_rows = len(union(data, "train")[1]), len(union(data, "val")[1])
    stages = [(kind, rnd, stage) for kind, rnd, stage, _ in sink.records]
    assert stages == [
        (CENTRAL, 1, "train"), (CENTRAL, 1, "evaluate"), (CENTRAL, 2, "train"),
        (CENTRAL, 2, "evaluate"), (CENTRAL, 3, "train"), (CENTRAL, 3, "evaluate"),
        ("selected", result["selected_round"], "evaluate"),
    ]  # fmt: skip
    for _, _, stage, metrics in sink.records[:-1]:
        if stage == "train":
            assert metrics["num_examples"] == rows and 0 < metrics["loss"] < 10
        else:
            assert metrics["num_examples"] == val_rows and 0 <= metrics["pr_auc"] <= 1
            assert {"recall_at_1pct_fpr", "precision_at_budget", "amount_recall"} <= set(metrics)
    assert sink.records[-1][3] == result
    # the same step plan a federated run makes for the union's rows
    plan = Plan.for_rows(rows, settings.batch_size, 1, 20, 3, settings.learning_rate)
    assert result["steps"] == plan.total == 3 * 20


def test_the_selected_round_is_the_latest_within_one_standard_error_of_the_best_so_far(
    tmp_path: Path,
) -> None:
    settings, sink = _settings(num_server_rounds=5, pretrain_rows=20_000), Sink()
    result = run_baseline(settings, tmp_path, sink)
    frauds = float(union(settings.data_spec(), "val")[1].sum())
    rounds = sink.evaluations()
    expected, top = 0, math.nan
    for rnd, metrics in sorted(rounds.items()):
        pr_auc = metrics["pr_auc"]
        top = pr_auc if math.isnan(top) or pr_auc > top else top
        if pr_auc >= top - fm.pr_auc_margin(top, frauds):
            expected = rnd
    assert result["selected_round"] == expected
    _, card = load_model(tmp_path / "model.pt")
    # the selected round's threshold: the one its validation scores chose for the alert budget
    assert card.threshold == rounds[expected]["threshold"] == result["threshold"]
    assert card.pretrained_rows == 20_000


def test_model_selection_last_keeps_the_final_round() -> None:
    settings = _settings(model_selection="last", learning_rate=0.02, pretrain_rows=20_000)
    sink = Sink()
    result = run_baseline(settings, sink=sink)
    assert result["selected_round"] == 3
    assert result["threshold"] == sink.evaluations()[3]["threshold"]


def test_a_fixed_threshold_is_used_every_round_and_on_the_test_set(tmp_path: Path) -> None:
    settings, sink = _settings(threshold=0.3, alert_rate=0), Sink()
    result = run_baseline(settings, tmp_path, sink)
    assert [m["threshold"] for m in sink.evaluations().values()] == [0.3, 0.3, 0.3]
    assert result["threshold"] == 0.3
    assert "precision_at_budget" not in result  # no alert budget, no figures at it
    _, card = load_model(tmp_path / "model.pt")
    assert card.threshold == 0.3 and card.alert_rate == 0


def test_the_same_settings_give_the_same_result_and_no_out_writes_no_model(
    tmp_path: Path,
) -> None:
    settings = _settings(num_server_rounds=2)
    first = run_baseline(settings, tmp_path / "central")
    second = run_baseline(settings)
    assert second == pytest.approx(first, nan_ok=True)
    assert list(tmp_path.rglob("model.pt")) == [tmp_path / "central" / "model.pt"]


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("train", r"the regions' training rows: its [\d,]+ rows hold no fraud \(isFraud=1\); "
                  "nothing to learn fraud from"),
        ("test", r"the server's test set: its 3,000 rows hold no fraud \(isFraud=1\); PR-AUC and "
                 "ROC-AUC are undefined on it"),
        ("tiny-test", r"the server's test set: \d+ rows, fewer than the 50 Flame needs"),
    ],
)  # fmt: skip
def test_unusable_rows_are_refused_in_one_line_before_any_training(
    tmp_path: Path, where: str, match: str
) -> None:
    overrides: dict[str, Any] = {
        "train": {"data_path": _no_fraud_csv(tmp_path / "no-fraud.csv")},
        "test": {"test_path": _no_fraud_csv(tmp_path / "no-fraud.csv")},
        "tiny-test": {"test_fraction": 0.001},
    }[where]
    sink = Sink()
    with pytest.raises(DegenerateDataError, match=match) as refused:
        run_baseline(_settings(**overrides), tmp_path / "central", sink)
    assert "\n" not in str(refused.value)
    assert sink.records == [] and not (tmp_path / "central").exists()


def test_no_validation_rows_are_refused_in_one_line_before_any_training() -> None:
    settings, sink = _settings(synth_rows=2000, val_fraction=1e-6), Sink()
    assert len(union(settings.data_spec(), "val")[1]) == 0
    with pytest.raises(DegenerateDataError, match="validation rows"):
        run_baseline(settings, sink=sink)
    assert sink.records == []
