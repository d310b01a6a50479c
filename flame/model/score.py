"""Score a PaySim-format CSV with a saved Flame model."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from flame.data.features import FEATURE_VERSION, build_features
from flame.data.history import History
from flame.data.loader import csv_files, header, read_paysim_file
from flame.data.schema import LABELS
from flame.files import atomic_file, writable_folder
from flame.model import metrics as fm
from flame.model.net import FraudMLP, ModelCard, load_model
from flame.model.train import predict_logits

log = logging.getLogger("flame.model.score")


def load_scorer(model_path: Path) -> tuple[FraudMLP, ModelCard]:
    """A saved model that this Flame can score with (its feature version)."""
    model, card = load_model(model_path)
    if card.feature_version != FEATURE_VERSION:
        raise ValueError(
            f"{model_path} was trained with feature version {card.feature_version}; "
            f"this Flame builds version {FEATURE_VERSION}"
        )
    return model, card


def score_frame(model_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``fraud_probability`` and ``is_fraud_predicted`` (stored threshold)."""
    return score_with(*load_scorer(model_path), frame)


SMALL = 64  # up to this many rows, numpy's forward pass beats torch's per-call overhead


class Forward:
    """A FraudMLP's eval-mode forward pass in numpy (Linear and ReLU; dropout is the identity),
    for the scorer's small requests: torch's dispatch costs more than the arithmetic there."""

    def __init__(self, model: FraudMLP) -> None:
        self.steps: list[tuple[np.ndarray, np.ndarray] | None] = []  # None: a ReLU
        for module in model.net:
            if isinstance(module, torch.nn.Linear):
                weight = module.weight.detach().numpy().T.copy()
                self.steps.append((weight, module.bias.detach().numpy().copy()))
            elif isinstance(module, torch.nn.ReLU):
                self.steps.append(None)
            elif not isinstance(module, torch.nn.Dropout):
                raise TypeError(f"no numpy forward pass for {type(module).__name__}")

    def logits(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            x = np.maximum(x, 0) if step is None else x @ step[0] + step[1]
        return x[:, 0]


def probabilities(
    model: FraudMLP,
    card: ModelCard,
    rows: Mapping[str, Any],
    history: History | None = None,
    forward: Forward | None = None,
) -> np.ndarray:
    """Fraud probability of each of ``rows`` (a validated frame or checked columns);
    ``history``: the party's earlier rows (a scorer's store); None = ``rows`` are all.
    ``forward``: the model's numpy pass, used for batches of at most ``SMALL`` rows."""
    x = build_features(rows, card.drop_balance_features, history)
    if forward is not None and len(x) <= SMALL:
        return fm.sigmoid(forward.logits(x))
    return fm.sigmoid(predict_logits(model, torch.from_numpy(x)))


def score_with(
    model: FraudMLP, card: ModelCard, frame: pd.DataFrame, history: History | None = None
) -> pd.DataFrame:
    probability = probabilities(model, card, frame, history)
    return frame.assign(
        fraud_probability=probability,
        is_fraud_predicted=(probability >= card.threshold).astype(np.int8),
    )


def score_file(model_path: Path, input_csv: Path, out_csv: Path) -> pd.DataFrame:
    """Score every row of ``input_csv`` (input order) and write ``out_csv``; label columns are
    written only if the input has them."""
    files = csv_files(input_csv)
    if len(files) != 1 or input_csv.is_dir():
        raise ValueError(f"{input_csv} is a folder; flame score takes one CSV file")
    [path] = files
    if out_csv.resolve() == path.resolve():
        raise ValueError(f"--out {out_csv} is the input file; scoring never overwrites its input")
    if out_csv.is_dir():
        raise ValueError(f"--out {out_csv} is a folder; give the CSV file to write")
    writable_folder(out_csv.parent, f"--out {out_csv}: folder")
    frame = read_paysim_file(path, require_labels=False)
    absent = [c for c in LABELS if c not in header(path)]
    scored = score_frame(model_path, frame).drop(columns=absent)
    with atomic_file(out_csv) as staging:
        scored.to_csv(staging, index=False)
    log.info("Scored %d rows of %s -> %s", len(scored), input_csv, out_csv)
    return scored
