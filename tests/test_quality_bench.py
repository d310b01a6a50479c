"""The pieces of benchmarks/quality.py (the benchmark itself is not part of the test suite)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
assert spec is not None and spec.loader is not None
quality = importlib.util.module_from_spec(spec)
sys.modules["quality"] = quality  # dataclasses look their module up
spec.loader.exec_module(quality)


def test_scores_recall_at_precision_and_f1_at_the_stored_threshold() -> None:
    # ranked: F F F N F N N N ... ; precision >= 0.9 holds down to the 3rd fraud (3/3)
    p = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    result = quality.scores(p, y, threshold=0.955)
    assert result["recall_at_p90"] == pytest.approx(3 / 4)
    assert result["f1"] == pytest.approx(2 * 3 / (4 + 4))  # 4 flagged, 3 right, 4 frauds
    assert result["roc_auc"] == pytest.approx(1 - 1 / (4 * 6))
    assert 0.9 < result["pr_auc"] < 1.0


def test_table_averages_the_held_out_files_then_the_seeds() -> None:
    row = quality.ROWS[1]
    results = []
    for seed, values in ((1, (0.2, 0.4, 0.6)), (2, (0.6, 0.8, 1.0))):
        for name, v in zip(quality.REAL_FILES, values, strict=True):
            job = quality.Job(row, "real", seed, name)
            results.append((job, dict.fromkeys(quality.METRICS, v)))
    text, summary = quality.table(results)
    cell = summary[row.name]["real"]["pr_auc"]
    assert cell["mean"] == pytest.approx(0.6) and cell["std"] == pytest.approx(0.2)
    assert cell["seeds"] == 2
    assert "0.600 ± 0.200" in text


def test_rounds_reads_validation_held_out_and_the_kept_round(tmp_path: Path) -> None:
    head = "time,kind,round,stage,pr_auc\n"
    lines = ["0,server,0,evaluate,0.1", "1,client_aggregate,1,train,"]
    for rnd, (val, held) in enumerate(((0.90, 0.80), (0.95, 0.85), (0.94, 0.88)), start=1):
        lines += [f"1,client_aggregate,{rnd},evaluate,{val}", f"1,server,{rnd},evaluate,{held}"]
    lines.append("2,selected,2,evaluate,0.85")
    (tmp_path / "metrics.csv").write_text(head + "\n".join(lines) + "\n")
    got = quality.rounds(tmp_path / "metrics.csv")
    assert got == {
        "validation_by_round": [0.90, 0.95, 0.94],
        "heldout_by_round": [0.80, 0.85, 0.88],
        "selected_round": 2,
    }
    assert quality.rounds(tmp_path / "missing.csv") == {}


def test_round_table_counts_the_rule_against_the_final_round() -> None:
    row = quality.ROWS[1]
    kept_final = ((0.85, 0.88), (0.90, 0.90), (0.95, 0.91))  # a loss, a tie, a win
    results = [
        (quality.Job(row, "real", 1, name), {
            "pr_auc": kept, "heldout_by_round": [0.5, final], "validation_by_round": [0.9, 0.9],
            "selected_round": 1 if kept != final else 2,
        })
        for name, (kept, final) in zip(quality.REAL_FILES, kept_final, strict=True)
    ]  # fmt: skip
    text = quality.round_table(results)
    line = next(x for x in text.splitlines() if x.startswith(f"| {row.name} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:3] == ["0.500", f"{np.mean([f for _, f in kept_final]):.3f}"]
    assert cells[-1] == "1 / 1 / 1"
    assert quality.round_table([]) == ""


def test_the_synthetic_only_table_has_each_file_their_mean_and_the_pooled_figure(
    tmp_path: Path,
) -> None:
    """benchmarks/synthetic_only.py: what it reads of a scored file, and its table's columns."""
    spec = importlib.util.spec_from_file_location(
        "synthetic_only", ROOT / "benchmarks" / "synthetic_only.py"
    )
    assert spec is not None and spec.loader is not None
    synthetic_only = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic_only)
    path = tmp_path / "scored.csv"
    path.write_text("step,isFraud,fraud_probability\n1,1,0.9\n1,0,0.2\n1,1,0.1\n")
    y, p = synthetic_only.scored(path)
    assert y.tolist() == [1, 0, 1] and p.tolist() == [0.9, 0.2, 0.1]
    runs = [{name: 0.5 + i / 10 for i, name in enumerate(quality.REAL_FILES)}
            | {"mean of the files": 0.6, "pooled": 0.9}]  # fmt: skip
    text = synthetic_only.table({"with the balance columns": runs}, [1])
    assert "| with the balance columns | 0.500 ± 0.000 | 0.600 ± 0.000 | 0.700 ± 0.000 |" in text
    assert text.rstrip().endswith("| 0.600 ± 0.000 | 0.900 ± 0.000 |")
