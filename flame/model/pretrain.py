"""Warm start from public data: the initial global model is trained centrally on synthetic PaySim.

The synthetic generator (``flame.data.synth``) encodes the simulator's published behaviour, not any
region's rows, so this costs no privacy budget and moves no data: the server (or ``flame
baseline``) trains it before round 1 and every region starts from a model that already knows
PaySim's fraud patterns. Federated training then adapts it to the regions' real rows. It matters
most where the regions' own signal is weakest: DP-SGD (noise swamps a few thousand rows) and the
model without balance columns. ``FLAME_PRETRAIN_ROWS=0`` starts from random weights instead.

The synthetic rows come from their own seed stream (never the run's data seed, so a synthetic run
never pre-trains on its own test rows). The weights are cached per recipe in the cache folder.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from flame.files import atomic_file
from flame.model.net import FraudMLP, ModelCard, build_model

log = logging.getLogger("flame.model.pretrain")
EPOCHS = 3
FRAUD_RATE = 0.0013  # the Kaggle file's share of fraud rows


def pretrain_seed(seed: int) -> int:
    """The synthetic data seed of a run seeded ``seed``: a separate stream from the run's data."""
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0])


def cache_path(
    card: ModelCard, rows: int, seed: int, batch_size: int, lr: float, cache: Path
) -> Path:
    recipe = (
        f"v{card.feature_version}|{','.join(card.feature_names)}|{card.hidden_sizes}|{rows}|"
        f"{seed}|{batch_size}|{lr}|{EPOCHS}|{FRAUD_RATE}|{torch.__version__}"
    )
    return cache / "pretrain" / f"{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.pt"


def initial_model(
    card: ModelCard, seed: int, rows: int, batch_size: int, lr: float, cache: Path,
    warm: bool = True,
) -> FraudMLP:  # fmt: skip
    """The model round 1 starts from: warm-started on ``rows`` synthetic rows (``rows`` 0: the
    seeded random weights). Records ``rows`` on the card; ``warm=False`` (a resumed run, whose
    weights come from its checkpoint) skips the training."""
    model = build_model(card, seed=seed)
    card.pretrained_rows = rows
    if rows and warm:
        model.load_state_dict(warm_start(card, rows, seed, batch_size, lr, cache))
    return model


def warm_start(
    card: ModelCard, rows: int, seed: int, batch_size: int, lr: float, cache: Path
) -> dict[str, torch.Tensor]:
    """The initial weights for ``card``'s model: trained on ``rows`` synthetic rows (cached)."""
    path = cache_path(card, rows, seed, batch_size, lr, cache)
    if path.exists():
        log.info("Warm start: synthetic pre-trained weights from %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    state = _train(card, rows, seed, batch_size, lr)
    with atomic_file(path) as staging:
        torch.save(state, staging)
    return state


def _train(
    card: ModelCard, rows: int, seed: int, batch_size: int, lr: float
) -> dict[str, torch.Tensor]:
    from flame.data.features import build_features, labels
    from flame.data.synth import generate
    from flame.model.train import Plan, default_pos_weight, train_steps

    frame = generate(rows, pretrain_seed(seed), FRAUD_RATE)
    x = torch.from_numpy(build_features(frame, card.drop_balance_features))
    y = torch.from_numpy(labels(frame))
    model = build_model(card, seed=seed)
    plan = Plan.for_rows(len(x), batch_size, EPOCHS, 1, 1, lr)
    loss = train_steps(
        model, x, y, plan=plan, rnd=1, batch_size=batch_size,
        pos_weight=default_pos_weight(y.numpy()), seed=seed, desc="warm start",
    )  # fmt: skip
    log.info(
        "Warm start: pre-trained on %d synthetic rows (%d frauds), %d steps, loss %.4f",
        len(y), int(y.sum()), plan.total, loss,
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
