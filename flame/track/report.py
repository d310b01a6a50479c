"""Print a run's per-round metrics as a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SHOWN = ["round", "kind", "threshold", "loss", "roc_auc", "pr_auc", "precision", "recall", "f1"]
# the alert figures, under short headers (shown when the run has them)
ALERTS = {"precision_at_budget": "P@budget", "recall_at_budget": "R@budget",
          "alert_rate_at_budget": "alerts", "amount_recall": "amount_R"}  # fmt: skip


def rounds_table(metrics_csv: Path) -> pd.DataFrame:
    table = pd.read_csv(metrics_csv)
    shown = SHOWN + [c for c in ALERTS if c in table and table[c].notna().any()]
    table = table[table["stage"] == "evaluate"][shown].rename(columns=ALERTS)
    return table.sort_values(["round", "kind"], kind="stable").reset_index(drop=True)


def print_rounds(metrics_csv: Path) -> None:
    if not metrics_csv.exists():
        print(f"(no {metrics_csv}: CSV tracking is off)")
        return
    table = rounds_table(metrics_csv)
    table["threshold"] = table["threshold"].map(lambda v: f"{v:.6f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
