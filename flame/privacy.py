"""DP-SGD with Opacus, accounted over the whole federated run, per region.

Guarantee: record-level (ε, δ)-differential privacy for each region's training rows, with
respect to everything that region sends in all rounds together (the model updates; the
validation metrics it reports are not covered). Each region has ONE RDP accountant for the run:
its history of (noise multiplier, sample rate, steps) is kept in the SuperNode's context state
and restored every round, so the reported ε is cumulative, not one round's.

With a target ε, the noise multiplier is chosen so that rounds x local epochs of Poisson-sampled
steps spend exactly that budget; a region whose next round would exceed it stops training and
says so. Opacus is imported only when DP is on.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
from flwr.app import ConfigRecord, RecordDict
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from flame.settings import FlameSettings

log = logging.getLogger("flame.privacy")
# Opacus's per-sample hooks on the first layer (whose input needs no gradient) trigger this
warnings.filterwarnings("ignore", message="Full backward hook is firing")
STATE_KEY = "dp-accountant"
History = list[tuple[float, float, int]]


def load_history(state: RecordDict) -> History:
    record = state.config_records.get(STATE_KEY)
    if record is None:
        return []
    return list(zip(record["noise"], record["rate"], record["steps"], strict=True))  # type: ignore[arg-type]


def save_history(state: RecordDict, history: History) -> None:
    state[STATE_KEY] = ConfigRecord(
        {
            "noise": [float(h[0]) for h in history],
            "rate": [float(h[1]) for h in history],
            "steps": [int(h[2]) for h in history],
        }
    )


def epsilon_of(history: History, delta: float) -> float:
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta))


def noise_multiplier(
    settings: FlameSettings, sample_rate: float, rounds: int, epochs: int
) -> float:
    if settings.dp_noise_multiplier > 0:
        return settings.dp_noise_multiplier
    return float(
        get_noise_multiplier(
            target_epsilon=settings.dp_target_epsilon,
            target_delta=settings.dp_delta,
            sample_rate=sample_rate,
            epochs=rounds * epochs,
            accountant="rdp",
        )
    )


def dp_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    settings: FlameSettings,
    state: RecordDict,
    rounds: int,
    epochs: int,
    lr: float,
    pos_weight: float,
    seed: int,
) -> tuple[float, float, bool]:
    """One round of DP-SGD; returns (loss, ε spent so far, budget exhausted?)."""
    history = load_history(state)
    batches = max(1, math.ceil(len(x) / settings.batch_size))
    sample_rate = 1 / batches  # what Opacus's Poisson DPDataLoader uses
    sigma = noise_multiplier(settings, sample_rate, rounds, epochs)
    steps = epochs * batches
    planned = epsilon_of([*history, (sigma, sample_rate, steps)], settings.dp_delta)
    spent = epsilon_of(history, settings.dp_delta)
    budget = settings.dp_target_epsilon
    if budget > 0 and planned > budget * 1.01:  # 1 % = Opacus's noise search tolerance
        log.warning(
            "privacy budget spent: ε=%.3f of %.3f; another round would reach %.3f, "
            "so this region stops training",
            spent, budget, planned,
        )  # fmt: skip
        return math.nan, spent, True

    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=settings.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr * 10, momentum=0.9)
    engine = PrivacyEngine(accountant="rdp")
    engine.accountant.history = list(history)
    private, optimizer, loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=settings.dp_max_grad_norm,
        poisson_sampling=True,
    )
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    private.train()
    total, count = 0.0, 0
    for _ in tqdm(range(epochs), desc="dp-sgd", unit="epoch", leave=False):
        total, count = 0.0, 0
        for xb, yb in loader:
            if len(xb) == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(private(xb), yb)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(xb), count + len(xb)
    private._close()  # remove Opacus's hooks: the model object stays a plain nn.Module
    save_history(state, engine.accountant.history)
    epsilon = float(engine.accountant.get_epsilon(settings.dp_delta))
    log.info("DP-SGD round: σ=%.3f, q=%.4f, ε spent so far %.3f", sigma, sample_rate, epsilon)
    return total / max(count, 1), epsilon, False
