"""The reference federated training is compared against: the same model trained centrally on
the union of the regions' training rows, with the same step plan and learning-rate schedule
(``flame.model.train.Plan`` for the union's rows), the same model selection (the "round" with
the best validation PR-AUC, on the union of the regions' validation rows) and scored on the
same held-out test set. It writes a run folder like a federated run: ``model.pt`` (usable by
``flame score``) and ``metrics.csv``."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from flame.data.features import amounts
from flame.data.partition import heldout_arrays, region_arrays
from flame.data.spec import DataSpec
from flame.model import metrics as fm
from flame.model.net import new_card, save_model
from flame.model.pretrain import initial_model
from flame.model.train import Plan, default_pos_weight, predict_logits, train_steps
from flame.settings import FlameSettings

log = logging.getLogger("flame.ops.baseline")
CENTRAL = "central"


def union(data: DataSpec, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All regions' rows of one split, concatenated."""
    parts = [region_arrays(data, r)[split] for r in data.regions]
    x, y = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    return torch.from_numpy(x), torch.from_numpy(y)


class MetricsSink(Protocol):
    """Where the rounds' figures go (``flame.track.tracking.CsvSink``: metrics.csv)."""

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None: ...


def run_baseline(
    settings: FlameSettings, out: Path | None = None, sink: MetricsSink | None = None
) -> dict[str, float]:
    """Central training; the selected model's test-set metrics (and ``model.pt`` in ``out``,
    each round's figures to ``sink``)."""
    torch.set_num_threads(settings.torch_threads)
    data = settings.data_spec()
    (x, y), (x_val, y_val) = union(data, "train"), union(data, "val")
    x_test, y_test = (torch.from_numpy(a) for a in heldout_arrays(data))
    fm.require_usable_rows(y.numpy(), "the regions' training rows", "nothing to learn fraud from")
    fm.require_usable_rows(y_test.numpy(), "the server's test set", fm.UNDEFINED)
    if len(y_val) == 0:
        raise fm.DegenerateDataError(
            "the regions' validation rows: none (raise FLAME_VAL_FRACTION); no round can be "
            "chosen without them"
        )
    card = new_card(settings.drop_balance_features, settings.hidden_sizes, settings.threshold)
    model = initial_model(
        card, settings.seed, settings.pretrain_rows, settings.batch_size, settings.learning_rate,
        settings.cache_dir,
    )  # fmt: skip
    plan = Plan.for_rows(
        len(x), settings.batch_size, settings.local_epochs, settings.min_local_steps,
        settings.num_server_rounds, settings.learning_rate, settings.lr_schedule,
    )  # fmt: skip
    pos_weight = settings.pos_weight or default_pos_weight(y.numpy())
    best: tuple[float, int, float, dict[str, torch.Tensor], list[float]] | None = None
    top, frauds = math.nan, float(y_val.sum())  # the best validation PR-AUC so far
    for rnd in range(1, plan.rounds + 1):
        loss = train_steps(
            model, x, y, plan=plan, rnd=rnd, batch_size=settings.batch_size,
            pos_weight=pos_weight, seed=settings.seed + rnd, desc=f"central round {rnd}",
        )  # fmt: skip
        val_logits = predict_logits(model, x_val)
        pos, neg = fm.histograms(val_logits, y_val.numpy())
        chosen = fm.chosen_threshold({"hist_pos": pos, "hist_neg": neg}, settings.alert_rate)
        threshold = settings.threshold or chosen
        val = fm.exact_metrics(val_logits, y_val.numpy(), threshold) | fm.exact_alerts(
            val_logits, y_val.numpy(), amounts(x_val.numpy()), threshold, settings.alert_rate
        )
        if sink is not None:
            sink.log(CENTRAL, rnd, "train", {"loss": loss, "num_examples": len(y)})
            sink.log(CENTRAL, rnd, "evaluate", val)
        # the federated rule: the latest round within one standard error of the best so far
        if not math.isnan(val["pr_auc"]) and (math.isnan(top) or val["pr_auc"] > top):
            top = val["pr_auc"]
        close = math.isnan(top) or val["pr_auc"] >= top - fm.pr_auc_margin(top, frauds)
        if settings.model_selection == "last" or best is None or close:
            counts = np.add(pos, neg).astype(float).tolist()
            best = (val["pr_auc"], rnd, threshold, copy.deepcopy(model.state_dict()), counts)
    assert best is not None
    _, card.selected_round, card.threshold, state, card.validation_score_counts = best
    card.validation_score_edges = fm.probability_edges(fm.BINS)
    card.alert_rate = settings.alert_rate
    model.load_state_dict(state)
    test_logits = predict_logits(model, x_test)
    result = fm.exact_metrics(test_logits, y_test.numpy(), card.threshold) | fm.exact_alerts(
        test_logits, y_test.numpy(), amounts(x_test.numpy()), card.threshold, settings.alert_rate
    )
    result |= {"steps": plan.total, "selected_round": card.selected_round}
    card.metrics = {k: float(v) for k, v in result.items()}
    if sink is not None:
        sink.log("selected", card.selected_round, "evaluate", result)
    if out is not None:
        save_model(out / "model.pt", model, card)
    log.info("central baseline on %d training rows: %s", len(y), _fmt(result))
    return result


def _fmt(result: dict[str, float]) -> str:
    keys = ("pr_auc", "roc_auc", "precision", "recall", "f1", "threshold", "selected_round")
    return " ".join(f"{k}={result[k]:.4f}" for k in keys if not np.isnan(result[k]))
