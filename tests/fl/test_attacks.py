"""flame/fl/attacks.py: what a simulated malicious region sends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flame.fl.attacks import poison_labels, poison_update


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    start = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    honest = {"w": torch.tensor([1.5, 1.0]), "b": torch.tensor([0.0])}
    return start, honest


def test_label_flip_trains_on_inverted_labels_and_sends_its_update_as_is() -> None:
    y = np.array([0.0, 1.0, 0.0])
    assert poison_labels(y, "label_flip").tolist() == [1.0, 0.0, 1.0]
    assert poison_labels(y, "scale") is y
    start, honest = _states()
    assert poison_update(start, honest, "label_flip", 10.0, 0) is honest


def test_sign_flip_and_scale_send_the_honest_update_reversed_or_scaled() -> None:
    start, honest = _states()
    flipped = poison_update(start, honest, "sign_flip", 3.0, 0)
    scaled = poison_update(start, honest, "scale", 3.0, 0)
    assert torch.allclose(flipped["w"], torch.tensor([-0.5, 5.0]))  # 1 - 3 x 0.5, 2 - 3 x -1
    assert torch.allclose(scaled["b"], torch.tensor([-1.0]))  # 0.5 + 3 x -0.5


def test_random_sends_seeded_noise_of_the_honest_updates_size() -> None:
    start, honest = _states()
    a = poison_update(start, honest, "random", 2.0, seed=7)
    b = poison_update(start, honest, "random", 2.0, seed=7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    honest_size = (honest["w"] - start["w"]).norm()
    assert (a["w"] - start["w"]).norm() == pytest.approx(2.0 * float(honest_size), rel=1e-5)
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        poison_update(start, honest, "nope", 1.0, 0)
