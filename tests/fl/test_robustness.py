from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from flame.fl.attacks import poison_labels, poison_update
from flame.fl.protocol import EVALUATE_FIRST, INFO_KEY, VALIDATION_KEY
from flame.fl.strategy import FlameStrategy, build_strategy
from flame.settings import FlameSettings, load_settings
from flame.track.tracking import Tracker
from tests.test_integration import run_main


def build(settings: FlameSettings, tracker: Tracker) -> FlameStrategy:
    return build_strategy(settings, settings, settings.regions, settings.codec, tracker)


def test_poison_update_kinds() -> None:
    start = {"w": torch.zeros(3)}
    honest = {"w": torch.tensor([1.0, -1.0, 0.5])}
    assert torch.equal(poison_update(start, honest, "sign_flip", 2.0, 0)["w"], -2 * honest["w"])
    assert torch.equal(poison_update(start, honest, "scale", 3.0, 0)["w"], 3 * honest["w"])
    noisy = poison_update(start, honest, "random", 1.0, 0)["w"]
    assert float(noisy.norm()) == pytest.approx(float(honest["w"].norm()), rel=1e-5)
    assert not torch.allclose(noisy, honest["w"])
    assert poison_update(start, honest, "label_flip", 1.0, 0) is honest
    flipped = poison_labels(np.array([0.0, 1.0], np.float32), "label_flip")
    assert flipped.tolist() == [1.0, 0.0] and flipped.dtype == np.float32


@pytest.mark.parametrize("name", ["fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum"])
def test_every_aggregator_builds_with_tracking(name: str, tmp_path: Path) -> None:
    settings = load_settings(aggregation=name, regions="a,b,c,d,e")
    strategy = build(settings, Tracker(settings, tmp_path, {}))
    from flame.fl.strategy import AGGREGATORS, FlameStrategy

    assert isinstance(strategy, FlameStrategy) and isinstance(strategy, AGGREGATORS[name])
    assert strategy.min_available_nodes == strategy.min_train_nodes == 1  # lost regions skipped
    strict = build(load_settings(min_regions=9, regions="a,b"), strategy.tracker)
    assert strict.min_available_nodes == 2  # never more than the regions that exist


@pytest.mark.integration
def test_robust_rule_beats_fedavg_under_attack(tmp_path: Path) -> None:
    """5 regions, one sends sign-flipped x10 updates: FedAvg collapses, FedMedian holds (the
    model with the balance columns, whose clean PR-AUC is near 1: the collapse is plain)."""
    final = {}
    for rule in ("fedavg", "fedmedian"):
        out = tmp_path / rule
        run_main(
            ["--regions", "r1,r2,r3,r4,r5", "--rows", "50000", "--fraud-rate", "0.01",
             "--rounds", "3", "--local-epochs", "1", "--with-balances", "--out", str(out)],
            {"FLAME_AGGREGATION": rule, "FLAME_ADVERSARIAL_REGIONS": "r1"},
        )  # fmt: skip
        table = pd.read_csv(out / "metrics.csv")
        server = table[(table["kind"] == "server") & (table["round"] == 3)].iloc[0]
        final[rule] = server["pr_auc"]
    assert final["fedmedian"] > 0.8
    assert final["fedavg"] < final["fedmedian"] - 0.3, final


def _validation(logits: np.ndarray, y: np.ndarray) -> MetricRecord:
    from flame.model import metrics as fm

    record = fm.region_metrics(logits, y, 0.5) | {"num_examples": len(y), "threshold": 0.5}
    return MetricRecord(record)  # type: ignore[arg-type]


def _reply(kind: str, region: str, content: dict[str, object]) -> Message:
    content = content | {INFO_KEY: ConfigRecord({"region": region})}
    return Message(RecordDict(content), dst_node_id=1, message_type=kind)  # type: ignore[arg-type]


def _train_reply(region: str, rnd: int, validation: MetricRecord | None) -> Message:
    metrics = {"train_loss": 0.1, "num_examples": 400, "bytes_sent": 0.0, "bytes_received": 0.0}
    content = {"arrays": ArrayRecord({"w": torch.full((2,), float(rnd))}),
               "metrics": MetricRecord(metrics)}  # type: ignore[arg-type]  # fmt: skip
    return _reply("train", region, content | ({VALIDATION_KEY: validation} if validation else {}))


@pytest.mark.parametrize("in_train", [False, True], ids=["evaluate-messages", "one-message"])
@pytest.mark.parametrize("selection", ["best-val", "last"])
def test_selected_round_is_the_best_by_pooled_validation_only(
    selection: str, in_train: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation PR-AUC per round: good, best, worse. The model kept is round 2's (or the
    last), with the threshold tuned on that round's validation scores; the same whether the
    regions' scores come in evaluate replies or in the next round's train replies."""
    from flwr.supercore.task_identity import TaskIdentity

    for key in ("_run_id", "_node_id", "_task_id"):  # the identity a ServerApp process has
        monkeypatch.setattr(TaskIdentity, key, 1)
    settings = load_settings(
        model_selection=selection, evaluate_in_train=in_train, num_server_rounds=3
    )
    strategy = build(settings, Tracker(settings, tmp_path, {}))
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(np.float32)
    separation = {1: 1.0, 2: 4.0, 3: 0.5}
    scores = {
        rnd: {r: _validation(rng.normal(size=400) + separation[rnd] * y, y) for r in "ab"}
        for rnd in separation
    }
    thresholds = {}
    for rnd in (1, 2, 3):
        if in_train:  # round rnd's train tasks carry round rnd-1's model and ask for its scores
            config = ConfigRecord()
            previous = ArrayRecord({"w": torch.full((2,), float(rnd - 1))})
            list(strategy.configure_train(rnd, previous, config, _FakeGrid()))  # type: ignore[arg-type]
            assert config[EVALUATE_FIRST] == (rnd > 1)
            strategy.aggregate_train(
                rnd, [_train_reply(r, rnd, scores.get(rnd - 1, {}).get(r)) for r in "ab"]
            )
            if rnd > 1:
                thresholds[rnd - 1] = strategy.threshold
        arrays = ArrayRecord({"w": torch.full((2,), float(rnd))})
        sent = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), _FakeGrid()))  # type: ignore[arg-type]
        assert len(sent) == (2 if rnd == 3 or not in_train else 0)  # only the last model's
        replies = [_reply("evaluate", r, {"metrics": scores[rnd][r]}) for r in "ab"] if sent else []
        strategy.aggregate_evaluate(rnd, replies)
        if sent:
            thresholds[rnd] = strategy.threshold
    chosen = strategy.selected
    assert chosen is not None
    expected = 2 if selection == "best-val" else 3
    assert chosen.round == expected and chosen.threshold == thresholds[expected]
    assert float(chosen.arrays["w"].numpy()[0]) == expected
    strategy.tracker.close_csv()
    table = pd.read_csv(tmp_path / "metrics.csv").query("stage == 'evaluate'")
    assert sorted(table.query("kind == 'client_aggregate'")["round"]) == [1, 2, 3]  # once each
    assert sorted(table.query("kind == 'client:a'")["round"]) == [1, 2, 3]


def test_selection_keeps_the_latest_round_that_scores_as_well(tmp_path: Path) -> None:
    """Small validation sets score 1.0 from round 1 on: a tie, or a later round within one
    standard error of the best, keeps the later round (it has trained more); a round clearly
    worse than the best does not replace it, nor does a later one close to it but not to the
    best."""
    from flame.model import metrics as fm

    settings = load_settings(num_server_rounds=5)
    strategy = build(settings, Tracker(settings, tmp_path, {}))
    frauds = 100.0  # one standard error at PR-AUC 0.99: 0.00995
    assert fm.pr_auc_margin(0.99, frauds) == pytest.approx(0.00995, rel=1e-3)
    assert fm.pr_auc_margin(1.0, frauds) == pytest.approx(0.005)  # half a fraud's share
    for rnd, figure, kept in [(1, 1.0, 1), (2, 1.0, 2), (3, 0.997, 3), (4, 0.9, 3),
                              (5, 0.992, 3)]:  # fmt: skip
        strategy.eval_arrays = ArrayRecord({"w": torch.full((2,), float(rnd))})
        strategy.consider(rnd, figure, [], frauds)
        assert strategy.selected is not None and strategy.selected.round == kept, rnd
    assert strategy.best_val == 1.0


class _FakeGrid:
    def get_node_ids(self) -> list[int]:
        return [1, 2]
