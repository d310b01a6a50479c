"""flame.model.score: the numpy forward pass the scorer uses for small requests is the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flame.data.synth import generate
from flame.model.net import build_model, new_card
from flame.model.score import SMALL, Forward, probabilities
from flame.model.train import predict_logits


@pytest.mark.parametrize("hidden", [[64, 32], [8], [16, 16, 16]])
def test_the_numpy_forward_pass_gives_the_models_logits(hidden: list[int]) -> None:
    card = new_card(True, hidden, 0.5)
    model = build_model(card, seed=3)
    x = np.random.default_rng(0).normal(size=(SMALL, len(card.feature_names)))
    x = x.astype(np.float32)
    expected = predict_logits(model, torch.from_numpy(x))
    assert np.allclose(Forward(model).logits(x), expected, rtol=0, atol=1e-5)


def test_probabilities_are_the_same_with_and_without_the_numpy_pass() -> None:
    card = new_card(False, [64, 32], 0.5)
    model = build_model(card, seed=1)
    rows = generate(SMALL, seed=2)
    with_numpy = probabilities(model, card, rows, forward=Forward(model))
    assert np.allclose(with_numpy, probabilities(model, card, rows), rtol=0, atol=1e-7)


def test_a_layer_without_a_numpy_pass_is_refused_by_name() -> None:
    model = build_model(new_card(True, [8], 0.5), seed=0)
    model.net.insert(1, torch.nn.Tanh())
    with pytest.raises(TypeError, match="Tanh"):
        Forward(model)
