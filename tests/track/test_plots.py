"""flame/track/plots.py: the pictures a run folder holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flame.track.plots import OperatingPoint, curves, rounds

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_scored_set_gives_its_roc_and_pr_curves(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    logits = rng.normal(size=500) + 2 * y
    point = OperatingPoint(recall=0.6, precision=0.4, budget=0.005, realised=0.0061)
    paths = curves(logits, y, tmp_path / "run", "test set", point)
    assert [p.name for p in paths] == ["roc_curve.png", "pr_curve.png"]
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5_000 for p in paths)
    assert point.label == "alert budget 0.50% (realised 0.61%): P 0.400, R 0.600"


def test_the_rounds_plot_reads_every_evaluated_kind(tmp_path: Path) -> None:
    rows = [
        {"kind": k, "round": r, "stage": "evaluate", "pr_auc": 0.1 * r, "roc_auc": 0.9, "f1": 0.2}
        for k in ("server", "client_aggregate") for r in (0, 1, 2)
    ] + [{"kind": "client:us", "round": 1, "stage": "train", "pr_auc": None}]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    path = rounds(tmp_path / "metrics.csv", tmp_path)
    assert path == tmp_path / "metrics_per_round.png" and path.read_bytes().startswith(PNG)
