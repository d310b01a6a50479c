from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flame.data.features import FEATURE_VERSION, build_features, feature_names, labels
from flame.data.synth import generate, write_csv
from flame.model.inference import mlp_logits
from flame.model.net import FraudMLP, ModelCard, build_model, load_model, save_model
from flame.model.score import score_file
from flame.model.train import Plan, default_pos_weight, predict_logits, train_steps


def card(threshold: float = 0.5) -> ModelCard:
    return ModelCard(feature_names(), False, [16, 8], threshold, FEATURE_VERSION)


def test_training_learns_synthetic_fraud() -> None:
    frame = generate(20_000, seed=1, fraud_rate=0.01)
    x, y = torch.from_numpy(build_features(frame)), torch.from_numpy(labels(frame))
    model = build_model(card(), seed=0)
    before = float(
        torch.nn.functional.binary_cross_entropy_with_logits(predict_logits_t(model, x), y)
    )
    plan = Plan.for_rows(len(x), 256, epochs=2, min_steps=400, rounds=1, lr=3e-3)
    loss = train_steps(
        model, x, y, plan=plan, rnd=1, batch_size=256,
        pos_weight=default_pos_weight(y.numpy()), seed=0,
    )  # fmt: skip
    after = float(
        torch.nn.functional.binary_cross_entropy_with_logits(predict_logits_t(model, x), y)
    )
    assert loss < before and after < before / 3
    from sklearn.metrics import average_precision_score

    assert average_precision_score(y.numpy(), predict_logits(model, x)) > 0.9


def predict_logits_t(model: FraudMLP, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(predict_logits(model, x))


def test_training_is_seeded() -> None:
    frame = generate(3_000, seed=2, fraud_rate=0.02)
    x, y = torch.from_numpy(build_features(frame)), torch.from_numpy(labels(frame))
    states = []
    for _ in range(2):
        model = build_model(card(), seed=5)
        plan = Plan(steps=30, rounds=2, lr=1e-3)
        train_steps(model, x, y, plan=plan, rnd=1, batch_size=64, pos_weight=2.0, seed=9)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_plan_is_sized_in_steps_and_the_schedule_spans_the_run() -> None:
    small = Plan.for_rows(4_000, 256, epochs=2, min_steps=100, rounds=5, lr=1e-2)
    big = Plan.for_rows(2_000_000, 256, epochs=2, min_steps=100, rounds=5, lr=1e-2)
    assert small.steps == 100 and big.steps == 2 * 7813 and small.total == 500
    assert small.lr_at(1, 0) == 1e-2
    lrs = [small.lr_at(r, s) for r in range(1, 6) for s in range(0, 100, 10)]
    assert all(a > b for a, b in itertools.pairwise(lrs))  # round r continues r-1
    assert small.lr_at(5, 99) >= small.floor * 1e-2
    assert Plan(100, 5, 1e-2, "constant").lr_at(4, 50) == 1e-2


def test_pos_weight_default() -> None:
    assert default_pos_weight(np.array([1, 0, 0, 0, 0])) == 2.0
    assert default_pos_weight(np.zeros(4)) == 1.0


def test_save_load_and_score_keeps_input_order(tmp_path: Path) -> None:
    model = build_model(card(threshold=0.7), seed=0)
    save_model(tmp_path / "model.pt", model, card(threshold=0.7))
    loaded, loaded_card = load_model(tmp_path / "model.pt")
    assert loaded_card.threshold == 0.7 and loaded_card.hidden_sizes == [16, 8]
    frame = generate(1_000, seed=3).sample(frac=1.0, random_state=1)  # any order
    write_csv(frame, tmp_path / "in.csv")
    summary = score_file(tmp_path / "model.pt", tmp_path / "in.csv", tmp_path / "out.csv")
    out = tmp_path.joinpath("out.csv").read_text().splitlines()
    assert len(out) == 1_001 and out[0].endswith("fraud_probability,is_fraud_predicted")
    scored = pd.read_csv(tmp_path / "out.csv")
    assert summary.rows == 1_000 and summary.flagged == scored["is_fraud_predicted"].sum()
    assert scored["nameOrig"].tolist() == frame["nameOrig"].tolist()
    expected = (scored["fraud_probability"] >= 0.7).astype(int)
    assert (scored["is_fraud_predicted"] == expected).all()
    x = torch.from_numpy(build_features(frame))
    direct = 1 / (1 + np.exp(-predict_logits(loaded, x)))
    assert np.allclose(scored["fraud_probability"], direct, atol=1e-6)


def test_numpy_scoring_equals_the_torch_model_in_eval_mode() -> None:
    model = FraudMLP(len(feature_names()), [32, 16, 8])
    x = torch.randn(1_000, len(feature_names()))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    expected = predict_logits(model, x)
    assert np.allclose(mlp_logits(state, x.numpy(), batch_size=300), expected, atol=1e-5)


def test_a_card_from_before_the_alert_budget_still_loads(tmp_path: Path) -> None:
    import torch

    model = build_model(card(), seed=0)
    save_model(tmp_path / "model.pt", model, card())
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    new_fields = ("alert_rate", "validation_score_edges", "validation_score_counts")
    old = {k: v for k, v in saved["card"].items() if k not in new_fields}
    torch.save(saved | {"card": old}, tmp_path / "old.pt")
    _, loaded = load_model(tmp_path / "old.pt")
    assert loaded.alert_rate == 0.0
    assert loaded.validation_score_edges == [] and loaded.validation_score_counts == []


def test_a_model_that_learns_passes_and_one_that_diverges_is_named() -> None:
    import math

    import pytest

    from flame.model.train import DivergedError, check_converging, constant_loss

    y = np.r_[np.ones(50), np.zeros(950)].astype(np.float32)
    w = default_pos_weight(y)
    guess = constant_loss(y, w)
    logit = math.log(w * 0.05 / 0.95)  # the weighted fraud share's log-odds: the best constant
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w))
    best = loss(torch.full((1000,), logit), torch.from_numpy(y)).item()
    assert guess == pytest.approx(best, rel=1e-5)
    model = torch.nn.Linear(2, 1)
    check_converging(0.5 * guess, model, y, w)  # learning: below the constant guess
    check_converging(3 * guess, model, y, w)  # an early, noisy round is not divergence
    for bad in (math.inf, math.nan, 25 * guess):
        with pytest.raises(DivergedError, match=r"^training diverged: "):
            check_converging(bad, model, y, w)
    with torch.no_grad():
        next(model.parameters())[0, 0] = math.nan
    with pytest.raises(DivergedError, match="weights are not finite"):
        check_converging(0.5 * guess, model, y, w)
