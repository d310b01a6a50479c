"""Scoring a FraudMLP's weights with numpy alone.

A ClientApp's evaluate message runs in a fresh process; scoring with numpy instead of torch
saves that process the ~2 s torch import. ``tests/model/test_train.py`` checks the logits equal
``FraudMLP`` in eval mode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

_LAYER = re.compile(r"^net\.(\d+)\.weight$")


def mlp_logits(
    state: Mapping[str, np.ndarray], x: np.ndarray, batch_size: int = 65_536
) -> np.ndarray:
    """Logits of ``FraudMLP`` (Linear -> ReLU [-> Dropout] ..., one output) in eval mode."""
    params = layer_params(state, x.shape[1])
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out = []
    for start in range(0, len(x), batch_size):
        h = np.asarray(x[start : start + batch_size], dtype=np.float32)
        for j, (w, b) in enumerate(params):
            h = h @ w.T + b
            if j < len(params) - 1:
                np.maximum(h, 0, out=h)
        out.append(h[:, 0])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def layer_params(state: Mapping[str, np.ndarray], columns: int) -> list[tuple[np.ndarray, ...]]:
    """The (weight, bias) of each Linear layer in order; a ValueError in one line when the
    weights are not a FraudMLP for rows of ``columns`` features."""
    layers = sorted(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    if not layers:
        raise ValueError(f"not FraudMLP weights: keys {sorted(state)}")
    missing = [f"net.{i}.bias" for i in layers if f"net.{i}.bias" not in state]
    if missing:
        raise ValueError(f"not FraudMLP weights: no {', '.join(missing)}")
    params = [(np.asarray(state[f"net.{i}.weight"]), np.asarray(state[f"net.{i}.bias"]))
              for i in layers]  # fmt: skip
    width = columns
    for i, (w, b) in zip(layers, params, strict=True):
        if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
            raise ValueError(
                f"not a FraudMLP for {columns} features: net.{i}.weight is {list(w.shape)}, "
                f"net.{i}.bias {list(b.shape)}, where {width} inputs come in"
            )
        width = w.shape[0]
    if width != 1:
        raise ValueError(f"not a FraudMLP: {width} outputs, not 1")
    return params
