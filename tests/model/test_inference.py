"""flame/model/inference.py: a FraudMLP's logits from its weights, with numpy alone."""

from __future__ import annotations

import numpy as np
import pytest

from flame.model.inference import mlp_logits


def _tiny() -> dict[str, np.ndarray]:
    """Linear(2, 2) -> ReLU -> Dropout -> Linear(2, 1), as FraudMLP names its layers."""
    return {
        "net.0.weight": np.array([[1.0, -1.0], [0.5, 0.5]], dtype=np.float32),
        "net.0.bias": np.array([0.0, -1.0], dtype=np.float32),
        "net.3.weight": np.array([[2.0, 3.0]], dtype=np.float32),
        "net.3.bias": np.array([0.5], dtype=np.float32),
    }


def test_logits_are_linear_relu_linear_by_hand() -> None:
    x = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    # row 1: h = relu([-1, 0.5]) = [0, 0.5] -> 1.5 + 0.5; row 2: relu([2, 1]) -> 7 + 0.5;
    # row 3: relu([0, -1]) = [0, 0] -> the output bias alone
    logits = mlp_logits(_tiny(), x)
    assert logits.shape == (3,) and logits.dtype == np.float32
    assert logits.tolist() == [2.0, 7.5, 0.5]


def test_layers_run_in_numeric_order_not_key_order() -> None:
    """net.10 comes after net.2 (a string sort would put it first), whatever the dict order."""
    state = {
        "net.10.weight": np.array([[1.0, 1.0]], dtype=np.float32),
        "net.10.bias": np.zeros(1, dtype=np.float32),
        "net.2.weight": np.array([[1.0, 0.0], [0.0, -1.0]], dtype=np.float32),
        "net.2.bias": np.zeros(2, dtype=np.float32),
    }
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    assert mlp_logits(state, x).tolist() == [3.0]  # relu([3, -4]) summed


def test_deep_fraud_mlp_in_eval_mode_equals_torch() -> None:
    import torch

    from flame.model.net import FraudMLP

    torch.manual_seed(0)
    model = FraudMLP(6, [8, 8, 8, 8]).eval()  # Linear layers at net.0, 3, 6, 9 and 12
    x = torch.randn(200, 6)
    with torch.no_grad():
        expected = model(x).numpy()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert np.allclose(mlp_logits(state, x.numpy()), expected, atol=1e-5)


def test_batches_do_not_change_the_logits_nor_the_input() -> None:
    rng = np.random.default_rng(1)
    state = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in _tiny().items()}
    x = rng.normal(size=(101, 2)).astype(np.float32)
    before = x.copy()
    whole = mlp_logits(state, x)
    for size in (1, 7, 100, 101, 10_000):
        assert np.allclose(mlp_logits(state, x, batch_size=size), whole, atol=1e-6)
    assert np.array_equal(x, before)  # the in-place ReLU works on a copy, never on x


def test_float64_rows_are_scored_as_float32() -> None:
    x = np.array([[1.0, 2.0]], dtype=np.float64)
    logits = mlp_logits(_tiny(), x)
    assert logits.dtype == np.float32 and logits.tolist() == [2.0]


def test_no_rows_give_no_logits() -> None:
    logits = mlp_logits(_tiny(), np.zeros((0, 2), dtype=np.float32))
    assert logits.shape == (0,) and logits.dtype == np.float32


def test_weights_of_another_model_are_refused_naming_their_keys() -> None:
    state = {"fc.weight": np.ones((1, 2)), "fc.bias": np.ones(1)}
    with pytest.raises(ValueError, match=r"not FraudMLP weights: keys \['fc.bias', 'fc.weight'\]"):
        mlp_logits(state, np.ones((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="not FraudMLP weights"):
        mlp_logits({}, np.ones((1, 2), dtype=np.float32))


def test_weights_that_do_not_fit_the_rows_are_refused_in_one_line() -> None:
    w, b = np.ones((1, 2), np.float32), np.zeros(1, np.float32)
    with pytest.raises(
        ValueError, match=r"not a FraudMLP for 3 features: net.0.weight is \[1, 2\]"
    ):
        mlp_logits({"net.0.weight": w, "net.0.bias": b}, np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"no net.0.bias"):
        mlp_logits({"net.0.weight": w}, np.ones((5, 2), np.float32))
    wide = {"net.0.weight": np.ones((2, 2), np.float32), "net.0.bias": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match="2 outputs, not 1"):
        mlp_logits(wide, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        mlp_logits({"net.0.weight": w, "net.0.bias": b}, np.ones((5, 2), np.float32), 0)
