"""Simulated adversarial regions: what a malicious or broken participant sends.

- ``label_flip``: trains on inverted labels (fraud <-> legitimate);
- ``sign_flip``: sends the global model minus ``scale`` x its honest update;
- ``scale``: sends the global model plus ``scale`` x its honest update (model replacement);
- ``random``: sends the global model plus Gaussian noise, ``scale`` x the honest update's size.
"""

from __future__ import annotations

import numpy as np
import torch

StateDict = dict[str, torch.Tensor]


def poison_labels(y: np.ndarray, attack: str) -> np.ndarray:
    return 1.0 - y if attack == "label_flip" else y


def poison_update(
    global_state: StateDict, local_state: StateDict, attack: str, scale: float, seed: int
) -> StateDict:
    if attack == "label_flip":
        return local_state
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, start in global_state.items():
        update = local_state[name] - start
        if attack == "sign_flip":
            out[name] = start - scale * update
        elif attack == "scale":
            out[name] = start + scale * update
        elif attack == "random":
            noise = torch.randn(update.shape, generator=generator)
            size = update.norm() / max(noise.norm().item(), 1e-12)
            out[name] = start + scale * size * noise
        else:
            raise ValueError(f"unknown attack {attack!r}")
    return out
