"""The round table a run prints at the end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flame.track.report import print_rounds, rounds_table

ROWS = [
    {"round": 1, "kind": "server", "stage": "evaluate", "threshold": 0.4, "pr_auc": 0.3,
     "precision_at_budget": 0.6, "alert_rate_at_budget": None},
    {"round": 1, "kind": "client:us", "stage": "train", "threshold": 0.5, "pr_auc": None,
     "precision_at_budget": None, "alert_rate_at_budget": None},
    {"round": 0, "kind": "server", "stage": "evaluate", "threshold": 0.5, "pr_auc": 0.2,
     "precision_at_budget": None, "alert_rate_at_budget": None},
    {"round": 1, "kind": "client:eu", "stage": "evaluate", "threshold": 0.4, "pr_auc": 0.5,
     "precision_at_budget": 0.7, "alert_rate_at_budget": None},
]  # fmt: skip


def write(tmp_path: Path) -> Path:
    path = tmp_path / "metrics.csv"
    table = pd.DataFrame(ROWS)
    for column in ("loss", "roc_auc", "precision", "recall", "f1"):
        table[column] = 0.1
    table.to_csv(path, index=False)
    return path


def test_evaluate_rows_by_round_and_kind_with_the_alert_figures_they_have(tmp_path: Path) -> None:
    table = rounds_table(write(tmp_path))
    assert list(zip(table["round"], table["kind"], strict=True)) == [
        (0, "server"), (1, "client:eu"), (1, "server")
    ]  # fmt: skip
    assert "P@budget" in table and "alerts" not in table  # an all-empty figure is left out


def test_the_table_prints_thresholds_in_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    print_rounds(write(tmp_path))
    assert "0.400000" in capsys.readouterr().out
    print_rounds(tmp_path / "none.csv")
    assert "CSV tracking is off" in capsys.readouterr().out
