"""flame/fl/server_app.py: what the ServerApp says and saves around Flower's round loop (the
whole run is tests/test_integration.py's)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from flame.data.features import feature_names
from flame.fl.server_app import (
    NothingTrainedError,
    ServerEvaluator,
    model_tags,
    nothing_trained,
    privacy_line,
    run_params,
    selected_arrays,
    wait_for_regions,
    with_update_noise,
)
from flame.fl.strategy import ClippedNoisy, FlameStrategy, Selected, build_strategy
from flame.model import metrics as fm
from flame.model.net import FraudMLP, new_card
from flame.settings import load_settings


class NoTracker:
    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


def _strategy(**overrides: Any) -> FlameStrategy:
    s = load_settings(regions="us,eu", **overrides)
    return build_strategy(s, s, s.regions, s.codec, NoTracker())  # type: ignore[arg-type]


class Grid:
    """A Grid whose regions connect one per poll, up to ``most``."""

    def __init__(self, most: int) -> None:
        self.most, self.polls = most, 0

    def get_node_ids(self) -> list[int]:
        self.polls += 1
        return list(range(min(self.polls, self.most)))


def test_a_run_says_plainly_whether_it_is_private() -> None:
    assert "NOT private" in privacy_line(load_settings(dp=False))
    line = privacy_line(load_settings(dp=True, dp_target_epsilon=2.5, dp_delta=1e-6))
    assert "target ε=2.5" in line and "δ=1e-06" in line and "NOT" not in line
    fixed = privacy_line(load_settings(dp=True, dp_target_epsilon=0, dp_noise_multiplier=1.3))
    assert "noise multiplier 1.3" in fixed


def test_a_registered_model_records_its_privacy_only_when_it_has_some() -> None:
    assert model_tags("abc", 0.0, None) == {"test_set": "abc"}
    tags = model_tags("abc", 0.98765, 1e-5)
    assert tags == {"test_set": "abc", "dp_epsilon": "0.9877", "dp_delta": "1e-05"}


def test_a_run_that_trained_nothing_gives_the_regions_reason_or_the_timeout() -> None:
    strategy = _strategy()
    silent = nothing_trained(strategy, 60, 3)
    assert isinstance(silent, NothingTrainedError)
    assert "any of the 3 rounds" in str(silent) and "FLAME_ROUND_TIMEOUT=60 s" in str(silent)
    strategy.errors |= {"us refused: policy requires DP", "eu refused: too few rows"}
    told = str(nothing_trained(strategy, 60, 2))
    assert "eu refused: too few rows" in told  # the first reason, in a stable order
    assert "and 1 other reasons above" in told and "TIMEOUT" not in told
    assert told.endswith("no model was saved")


def test_update_noise_wraps_the_strategy_only_when_asked() -> None:
    strategy = _strategy()
    assert with_update_noise(strategy, load_settings(update_noise=0), 2) is strategy
    noisy = with_update_noise(strategy, load_settings(update_noise=0.5, update_clip=2.0), 2)
    assert isinstance(noisy, ClippedNoisy)
    assert (noisy.noise_multiplier, noisy.clipping_norm, noisy.num_sampled_clients) == (
        0.5,
        2.0,
        2,
    )


def test_round_one_waits_for_every_region_then_goes_with_who_is_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    everyone = Grid(most=2)
    wait_for_regions(everyone, want=2, join_timeout=30)  # type: ignore[arg-type]
    assert everyone.polls <= 3  # returned as soon as both had joined
    with caplog.at_level(logging.WARNING, "flame.server"):
        wait_for_regions(Grid(most=1), want=2, join_timeout=0)  # type: ignore[arg-type]
    assert "starting with 1 of 2 regions connected" in caplog.text


def test_run_params_hold_every_setting_but_the_mlflow_address_and_account() -> None:
    params = run_params(load_settings(mlflow_credentials="/secret/creds.json"), 123)
    assert params["test_rows"] == 123 and params["data_source"] == "synthetic"
    assert "mlflow_credentials" not in params and "mlflow_tracking_uri" not in params
    assert params["num_server_rounds"] == load_settings().num_server_rounds


def _arrays(model: FraudMLP) -> ArrayRecord:
    return ArrayRecord(model.state_dict())


def test_the_saved_model_is_the_selected_round_with_its_threshold(tmp_path: Path) -> None:
    card, strategy = new_card(True, [4], 0.5), _strategy()
    last = _arrays(FraudMLP(len(card.feature_names), [4]))
    strategy.threshold = 0.3
    assert selected_arrays(card, strategy, last) is last  # nothing selected: the last round
    assert (card.threshold, card.selected_round) == (0.3, 0)
    kept = _arrays(FraudMLP(len(card.feature_names), [4]))
    strategy.selected = Selected(2, kept, 0.7, 0.9, [1.0] * 50)
    assert selected_arrays(card, strategy, last) is kept
    assert (card.threshold, card.selected_round) == (0.7, 2)
    assert card.validation_score_counts == [1.0] * 50
    assert card.validation_score_edges == fm.probability_edges(50)


def test_the_server_scores_a_model_on_its_test_set_and_sees_a_dead_one() -> None:
    torch.manual_seed(0)
    features = len(feature_names(drop_balances=True))
    x = torch.randn(200, features)
    y = (x[:, 0] > 1).float().numpy()
    model = FraudMLP(features, [4])
    evaluator = ServerEvaluator(model, (x, y))
    scored = evaluator.score(_arrays(model), 0.5)
    assert 0.0 <= scored["pr_auc"] <= 1.0 and "recall" in scored
    assert not evaluator.constant()
    dead = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    evaluator.score(ArrayRecord(dead), 0.5)  # type: ignore[arg-type]
    assert evaluator.constant()
    assert np.ptp(evaluator.logits) == 0.0
