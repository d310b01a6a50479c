"""Local training and scoring loops over in-memory tensors (no per-sample DataLoader)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def default_pos_weight(y: np.ndarray) -> float:
    """sqrt(neg/pos): up-weights the rare fraud class without swamping precision."""
    pos = float(y.sum())
    return math.sqrt((len(y) - pos) / pos) if pos else 1.0


def train_epochs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    pos_weight: float,
    seed: int,
    desc: str = "train",
) -> float:
    """Adam on BCE-with-logits (``pos_weight`` on frauds); returns the last epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    model.train()
    mean_loss = float("nan")
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", leave=False):
        order = torch.randperm(len(x), generator=generator)
        total = torch.zeros(())
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)  # no per-batch .item(): no sync, no Python float
        mean_loss = total.item() / max(len(x), 1)
    return mean_loss


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 65_536) -> np.ndarray:
    model.eval()
    parts = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)
