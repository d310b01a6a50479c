"""The "warm start alone" model of the quality benchmark: the initial global model round 1 of a
federated run starts from (``flame.model.pretrain``: synthetic rows only), with no federated
round and no region row in its weights. Its threshold is chosen as the runs choose theirs, on
the regions' validation rows, so ``flame score`` reads it like any model.

    FLAME_...=... python benchmarks/warm_alone.py --out DIR   # writes DIR/model.pt
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from flame.model import metrics as fm
from flame.model.net import new_card, save_model
from flame.model.pretrain import initial_model
from flame.model.train import predict_logits
from flame.ops.baseline import union
from flame.settings import load_settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    if not settings.pretrain_rows:
        sys.exit("warm_alone: FLAME_PRETRAIN_ROWS is 0: there is no warm start to score")
    torch.set_num_threads(settings.torch_threads)
    data = settings.data_spec()
    card = new_card(settings.drop_balance_features, settings.hidden_sizes, settings.threshold)
    model = initial_model(
        card, settings.seed, settings.pretrain_rows, settings.batch_size, settings.learning_rate,
        settings.cache_dir,
    )  # fmt: skip
    x_val, y_val = union(data, "val")
    pos, neg = fm.histograms(predict_logits(model, x_val), y_val.numpy())
    chosen = fm.chosen_threshold({"hist_pos": pos, "hist_neg": neg}, settings.alert_rate)
    card.threshold = settings.threshold or chosen
    card.selected_round = 0
    card.validation_score_counts = [float(a + b) for a, b in zip(pos, neg, strict=True)]
    card.validation_score_edges = fm.probability_edges(fm.BINS)
    card.alert_rate = settings.alert_rate
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(args.out / "model.pt", model, card)
    logging.info("warm start alone (%d synthetic rows): %s", settings.pretrain_rows, args.out)


if __name__ == "__main__":
    main()
