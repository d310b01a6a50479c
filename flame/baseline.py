"""The reference federated training is compared against: the same model trained centrally on
the union of the regions' training rows, tuned on the union of their validation rows, and
scored on the same held-out test set."""

from __future__ import annotations

import logging

import numpy as np
import torch

from flame import metrics as fm
from flame.features import feature_names
from flame.model import FraudMLP
from flame.partition import heldout_arrays, region_arrays
from flame.settings import FlameSettings
from flame.train import default_pos_weight, predict_logits, train_epochs

log = logging.getLogger("flame.baseline")


def union(settings: FlameSettings, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All regions' rows of one split, concatenated."""
    parts = [region_arrays(settings, r)[split] for r in settings.regions]
    x, y = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    return torch.from_numpy(x), torch.from_numpy(y)


def run_baseline(settings: FlameSettings, epochs: int | None = None) -> dict[str, float]:
    """Central training for ``epochs`` (default rounds x local epochs); test-set metrics."""
    torch.set_num_threads(settings.torch_threads)
    (x, y), (x_val, y_val) = union(settings, "train"), union(settings, "val")
    x_test, y_test = (torch.from_numpy(a) for a in heldout_arrays(settings))
    torch.manual_seed(settings.seed)
    model = FraudMLP(len(feature_names(settings.drop_balance_features)), settings.hidden_sizes)
    epochs = epochs or settings.num_server_rounds * settings.local_epochs
    train_epochs(
        model,
        x,
        y,
        epochs=epochs,
        lr=settings.learning_rate,
        batch_size=settings.batch_size,
        pos_weight=settings.pos_weight or default_pos_weight(y.numpy()),
        seed=settings.seed,
        desc="central",
    )
    threshold = settings.threshold
    if not threshold:
        threshold = fm.best_threshold(*fm.histograms(predict_logits(model, x_val), y_val.numpy()))
    result = fm.exact_metrics(predict_logits(model, x_test), y_test.numpy(), threshold)
    result["epochs"] = epochs
    log.info("central baseline on %d training rows: %s", len(y), _fmt(result))
    return result


def _fmt(result: dict[str, float]) -> str:
    keys = ("pr_auc", "roc_auc", "precision", "recall", "f1", "threshold")
    return " ".join(f"{k}={result[k]:.4f}" for k in keys if not np.isnan(result[k]))
