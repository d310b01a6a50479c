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
    layers = sorted(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    if not layers:
        raise ValueError(f"not FraudMLP weights: keys {sorted(state)}")
    params = [(state[f"net.{i}.weight"], state[f"net.{i}.bias"]) for i in layers]
    out = []
    for start in range(0, len(x), batch_size):
        h = np.asarray(x[start : start + batch_size], dtype=np.float32)
        for j, (w, b) in enumerate(params):
            h = h @ w.T + b
            if j < len(params) - 1:
                np.maximum(h, 0, out=h)
        out.append(h[:, 0])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
