"""ROC and precision-recall curves, and metrics per round, as PNG files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

if TYPE_CHECKING:
    from matplotlib import pyplot


def _pyplot() -> pyplot:  # type: ignore[valid-type]
    """pyplot on the file-only Agg backend (chosen here, not at import: no global side effect
    for whoever imports this module)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


@dataclass(frozen=True)
class OperatingPoint:
    """Where the alert budget puts the model: recall and precision at its threshold."""

    recall: float
    precision: float
    budget: float  # the alert rate asked for
    realised: float  # the alert rate at the threshold on the plotted rows

    @property
    def label(self) -> str:
        return (
            f"alert budget {self.budget:.2%} (realised {self.realised:.2%}): "
            f"P {self.precision:.3f}, R {self.recall:.3f}"
        )


def curves(
    logits: np.ndarray, y: np.ndarray, folder: Path, title: str,
    point: OperatingPoint | None = None,
) -> list[Path]:  # fmt: skip
    """Write roc_curve.png and pr_curve.png for one scored dataset (the PR curve marks
    ``point``, the alert budget's operating point); returns their paths."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(y, logits)
    precision, recall, _ = precision_recall_curve(y, logits)
    out = []
    for name, xs, ys, xl, yl in (
        ("roc_curve.png", fpr, tpr, "false positive rate", "true positive rate"),
        ("pr_curve.png", recall, precision, "recall", "precision"),
    ):
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(xs, ys)
        if point is not None and name == "pr_curve.png":
            ax.plot([point.recall], [point.precision], "o", color="tab:red", label=point.label)
            ax.legend(fontsize=7, loc="lower left")
        ax.set(xlabel=xl, ylabel=yl, title=f"{title}: {name[:-10].upper()} curve")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        out.append(folder / name)
    return out


def rounds(metrics_csv: Path, folder: Path) -> Path:
    """PR-AUC, ROC-AUC and F1 per round for every evaluation kind in metrics.csv."""
    plt = _pyplot()
    table = pd.read_csv(metrics_csv)
    table = table[table["stage"] == "evaluate"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, metric in zip(axes, ("pr_auc", "roc_auc", "f1"), strict=True):
        for kind, rows in table.groupby("kind"):
            ax.plot(rows["round"], rows[metric], marker="o", label=kind)
        ax.set(xlabel="round", title=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = folder / "metrics_per_round.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
