"""flame/fl/strategy.py: the whole run's round count, the aggregation rules, when a round's
model is scored."""

from __future__ import annotations

from typing import Any

import pytest
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from flame.fl.strategy import (
    FlameStrategy,
    RoundClock,
    build_strategy,
    scored_next_round,
    whole_run_round,
)
from flame.settings import load_settings


class NoTracker:
    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_a_resumed_run_counts_the_whole_runs_rounds() -> None:
    fresh, resumed = RoundClock(), RoundClock(done=3)
    assert [fresh(r) for r in (1, 2)] == [1, 2]
    assert [resumed(r) for r in (1, 2)] == [4, 5]  # Flower's round 1 is the whole run's 4th
    assert resumed.resumed_from(3) and not resumed.resumed_from(4)
    assert not fresh.resumed_from(0)  # a fresh run resumed nothing
    assert not resumed.made(3) and resumed.made(4)


def test_the_strategys_entry_points_see_the_whole_runs_round() -> None:
    class Probe:
        clock = RoundClock(done=2)

        @whole_run_round
        def configure(self, server_round: int, *args: Any) -> tuple[int, tuple[Any, ...]]:
            return server_round, args

    assert Probe().configure(1, "arrays", "config") == (3, ("arrays", "config"))
    entry_points = ("configure_train", "configure_evaluate", "aggregate_train")
    assert all(hasattr(getattr(FlameStrategy, n), "__wrapped__") for n in entry_points)
    assert hasattr(FlameStrategy.aggregate_evaluate, "__wrapped__")


@pytest.mark.parametrize(
    ("rule", "base"),
    [("fedavg", FedAvg), ("fedmedian", FedMedian), ("fedtrimmedavg", FedTrimmedAvg),
     ("krum", Krum), ("multikrum", MultiKrum)],
)  # fmt: skip
def test_each_rule_is_flowers_own_with_flames_tracking(rule: str, base: type) -> None:
    settings = load_settings(
        aggregation=rule, regions="a,b,c,d,e", num_malicious=1, trim_beta=0.25, min_regions=9
    )
    strategy = build_strategy(
        settings,
        settings,
        settings.regions,
        settings.codec,
        NoTracker(),  # type: ignore[arg-type]
    )
    assert isinstance(strategy, FlameStrategy) and isinstance(strategy, base)
    assert strategy.min_train_nodes == 5  # never waits for more regions than the run has
    if base is MultiKrum:
        assert strategy.num_nodes_to_select == 4
    if base is FedTrimmedAvg:
        assert strategy.beta == 0.25


def test_with_one_message_per_round_a_model_is_scored_by_the_next_rounds_train_task() -> None:
    assert [scored_next_round(True, r, 3) for r in (0, 1, 2, 3)] == [False, True, True, False]
    assert not any(scored_next_round(False, r, 3) for r in (1, 2, 3))
