"""Local training sized in optimiser steps, with one learning-rate schedule over the whole run.

A run of R rounds is planned as R x S steps per region (``Plan``): S is at least
``min_steps``, else ``epochs`` passes over the region's rows. Small data (10k rows) thus gets
enough steps to learn, large data (6M rows) the usual few epochs. The learning rate follows one
cosine (or constant) schedule over the run's steps, so round r continues where round r-1 ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def default_pos_weight(y: np.ndarray) -> float:
    """sqrt(neg/pos): up-weights the rare fraud class without swamping precision."""
    pos = float(y.sum())
    return math.sqrt((len(y) - pos) / pos) if pos else 1.0


DIVERGED = 20.0  # a round's mean loss this many times the best constant guess's: diverged


class DivergedError(ArithmeticError):
    """Training's loss became non-finite or far worse than knowing nothing about the rows."""


def constant_loss(y: np.ndarray, pos_weight: float) -> float:
    """The weighted BCE of the best constant guess (the weighted fraud share): what a model
    that learnt nothing scores; a model that learns scores less."""
    pos = float(np.sum(y)) / max(len(y), 1)
    weighted = pos_weight * pos / (pos_weight * pos + 1 - pos) if pos else 0.0
    entropy = -sum(p * math.log(p) for p in (weighted, 1 - weighted) if p > 0)
    return (pos_weight * pos + 1 - pos) * entropy


def check_converging(loss: float, model: nn.Module, y: np.ndarray, pos_weight: float) -> None:
    """A DivergedError (one line) when the round's mean ``loss`` is not finite, the weights are
    not, or the loss is over ``DIVERGED`` times :func:`constant_loss`."""
    guess = constant_loss(y, pos_weight)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if not math.isfinite(loss) or not finite:
        raise DivergedError(f"training diverged: the loss is {loss:.3g} and the weights are "
                            f"{'finite' if finite else 'not finite'}")  # fmt: skip
    if loss > DIVERGED * max(guess, 1e-3):
        raise DivergedError(
            f"training diverged: mean loss {loss:.3g}, over {DIVERGED:g} x the {guess:.3g} of "
            "always guessing the fraud share"
        )


@dataclass(frozen=True)
class Plan:
    """Steps per round, rounds and the learning-rate schedule of one region's training."""

    steps: int
    rounds: int
    lr: float
    schedule: str = "cosine"
    floor: float = 0.05  # cosine ends at this share of ``lr``

    @classmethod
    def for_rows(
        cls, rows: int, batch: int, epochs: int, min_steps: int, rounds: int, lr: float,
        schedule: str = "cosine",
    ) -> Plan:  # fmt: skip
        steps = max(min_steps, epochs * math.ceil(rows / max(batch, 1)))
        return cls(steps, rounds, lr, schedule)

    @property
    def total(self) -> int:
        return self.steps * self.rounds

    def lr_at(self, rnd: int, step: int) -> float:
        """Learning rate of ``step`` (0-based) in round ``rnd`` (1-based)."""
        if self.schedule == "constant":
            return self.lr
        done = min(((rnd - 1) * self.steps + step) / max(self.total, 1), 1.0)
        return self.lr * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * done)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    plan: Plan,
    rnd: int,
    batch_size: int,
    pos_weight: float,
    seed: int,
    desc: str = "train",
) -> float:
    """``plan.steps`` Adam steps on BCE-with-logits (``pos_weight`` on frauds), shuffled passes
    over the rows; returns the mean loss over the round's steps."""
    torch.manual_seed(seed)  # dropout draws from the global generator
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr_at(rnd, 0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    model.train()
    order, at = torch.randperm(len(x), generator=generator), 0
    total = torch.zeros(())
    for step in tqdm(range(plan.steps), desc=desc, unit="step", leave=False, mininterval=1):
        if at >= len(x):
            order, at = torch.randperm(len(x), generator=generator), 0
        idx = order[at : at + batch_size]
        at += batch_size
        set_lr(optimizer, plan.lr_at(rnd, step))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.detach()  # no per-batch .item(): no sync, no Python float
    return total.item() / max(plan.steps, 1)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 65_536) -> np.ndarray:
    model.eval()
    parts = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)
