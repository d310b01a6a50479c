from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flame.cli import main
from flame.schema import COLUMNS


def test_data_synth_writes_paysim(tmp_path: Path) -> None:
    assert (
        main(["data", "synth", "--rows", "3000", "--seed", "5", "--out", str(tmp_path / "s.csv")])
        == 0
    )
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 3000


def test_bad_input_is_one_line_error_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\n1,PAYMENT,12x,C1,0,0,M1,0,0,0,0\n")
    model = tmp_path / "model.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "flame.cli", "score", str(bad), "--model", str(model), "--out",
         str(tmp_path / "o.csv")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.csv" in proc.stderr and "'amount'" in proc.stderr and "row 1" in proc.stderr


def test_baseline_trains_centrally_on_the_regions_union(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["baseline", "--rows", "20000", "--epochs", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs"] == 3 and result["roc_auc"] > 0.95
