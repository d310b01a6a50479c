"""``flame score`` streams (issue 27 item 5): the output is the whole-file scoring's to the byte,
with history features carried across blocks, for files in step order and not; a failure
mid-file leaves no output; ``--report`` gives the whole file's metrics."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from flame.cli import main
from flame.data.features import build_features, feature_names
from flame.data.history import History
from flame.data.loader import read_paysim_file
from flame.data.synth import generate, write_csv
from flame.model import metrics as fm
from flame.model import score
from flame.model.net import build_model, new_card, save_model

BLOCK = 1_000  # rows per streamed block in these tests (forward passes of 250)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score, "PREDICT_ROWS", 250)
    monkeypatch.setattr(score, "BLOCK_ROWS", BLOCK)
    monkeypatch.setattr(score, "BAR_DELAY", 0.0)


def _model(tmp_path: Path, drop_balances: bool = False) -> Path:
    card = new_card(drop_balances, [16, 8], 0.5)
    save_model(tmp_path / "model.pt", build_model(card, seed=0), card)
    return tmp_path / "model.pt"


def _rows() -> pd.DataFrame:
    """5,300 rows in step order, where history crosses the block boundaries: a transfer and
    its cash-out on either side of row 1,000, a payee seen in block 1 paid again in block 2."""
    frame = generate(5_300, seed=7, fraud_rate=0.05)
    step = frame.loc[BLOCK - 1, "step"]
    frame.loc[[BLOCK - 1, BLOCK], ["step", "amount"]] = [step, 123_456.78]
    frame.loc[BLOCK - 1, "type"], frame.loc[BLOCK, "type"] = "TRANSFER", "CASH_OUT"
    frame.loc[BLOCK + 500, "nameDest"] = frame.loc[200, "nameDest"]
    return frame


def _whole_file(model: Path, path: Path, out: Path) -> bytes:
    """What flame score wrote before it streamed: the whole file scored in one frame."""
    frame = read_paysim_file(path, require_labels=False)
    absent = [c for c in ("isFraud", "isFlaggedFraud") if c not in pd.read_csv(path, nrows=0)]
    score.score_frame(model, frame).drop(columns=absent).to_csv(out, index=False)
    return out.read_bytes()


def test_history_crosses_the_blocks_of_these_files() -> None:
    frame = _rows()
    names = feature_names()
    whole = pd.DataFrame(build_features(frame), columns=names)
    assert whole.loc[BLOCK, "cashout_after_transfer"] == 1
    assert whole.loc[BLOCK + 500, "dest_seen"] == 1
    fresh = [build_features(frame.iloc[i : i + BLOCK]) for i in range(0, len(frame), BLOCK)]
    assert not np.array_equal(np.vstack(fresh), whole.to_numpy())  # a history per block differs
    history = History()
    carried = [build_features(frame.iloc[i : i + BLOCK], history=history)
               for i in range(0, len(frame), BLOCK)]  # fmt: skip
    assert np.array_equal(np.vstack(carried), whole.to_numpy())


@pytest.mark.parametrize("labelled", [True, False])
def test_streamed_output_is_the_whole_file_scoring_to_the_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labelled: bool
) -> None:
    frame = _rows() if labelled else _rows().drop(columns=["isFraud", "isFlaggedFraud"])
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    model = _model(tmp_path, drop_balances=not labelled)
    expected = _whole_file(model, path, tmp_path / "whole.csv")
    assert main(["score", str(path), "--model", str(model), "--out", str(tmp_path / "o.csv")]) == 0
    assert (tmp_path / "o.csv").read_bytes() == expected
    out, err = capsys.readouterr()
    flagged = int(pd.read_csv(tmp_path / "o.csv")["is_fraud_predicted"].sum())
    assert out == f"scored 5,300 rows -> {tmp_path / 'o.csv'} ({flagged:,} predicted fraud)\n"
    assert "scoring rows.csv" in err  # the progress bar, on stderr


def test_a_file_out_of_step_order_is_scored_in_two_passes_with_the_same_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = _rows()
    later = frame.iloc[2_500:].sample(frac=1.0, random_state=1)  # steps go back in block 3
    path = tmp_path / "unsorted.csv"
    pd.concat([frame.iloc[:2_500], later]).to_csv(path, index=False)
    model = _model(tmp_path)
    expected = _whole_file(model, path, tmp_path / "whole.csv")
    with caplog.at_level(logging.WARNING, logger="flame"):
        scored = score.score_file(model, path, tmp_path / "o.csv", keep=True)
    assert (tmp_path / "o.csv").read_bytes() == expected
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    found = re.search(r"is not in step order: row (\d+) has step (\d+), after step (\d+)", warning)
    assert found and warning.startswith(str(path)) and "sort it by step" in warning
    row, step, before = map(int, found.groups())
    steps = pd.read_csv(path)["step"]
    assert row > 2_500 and steps[row - 1] == step < before and before in set(steps[: row - 1])
    whole = pd.read_csv(tmp_path / "whole.csv")
    assert np.array_equal(scored.probability, whole["fraud_probability"].to_numpy())
    assert np.array_equal(scored.labels, whole["isFraud"].to_numpy())


def test_rows_out_of_order_within_a_block_still_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = _rows()
    blocks = [frame.iloc[i : i + BLOCK].sample(frac=1.0, random_state=i) for i in range(0, 5_300,
              BLOCK)]  # fmt: skip
    path = tmp_path / "rows.csv"
    pd.concat(blocks).to_csv(path, index=False)
    model = _model(tmp_path)
    expected = _whole_file(model, path, tmp_path / "whole.csv")
    with caplog.at_level(logging.WARNING, logger="flame"):
        score.score_file(model, path, tmp_path / "o.csv")
    assert (tmp_path / "o.csv").read_bytes() == expected
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_bad_row_mid_file_leaves_no_output_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rows.csv"
    write_csv(_rows(), path)
    lines = path.read_text().splitlines(keepends=True)
    lines[3_500] = ",".join(["1x", *lines[3_500].split(",")[1:]])
    path.write_text("".join(lines))
    out = tmp_path / "o.csv"
    out.write_text("an earlier output\n")
    code = main(["score", str(path), "--model", str(_model(tmp_path)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("flame: error: ") and "Traceback" not in err
    assert "rows.csv" in err and "'step'" in err and "row 3500" in err
    assert out.read_text() == "an earlier output\n"  # untouched: nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "o.csv", "rows.csv"]


def test_report_gives_the_whole_file_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rows.csv"
    write_csv(_rows(), path)
    model = _model(tmp_path)
    _whole_file(model, path, tmp_path / "whole.csv")
    whole = pd.read_csv(tmp_path / "whole.csv")
    probability = whole["fraud_probability"].clip(1e-12, 1 - 1e-12).to_numpy()
    expected = fm.exact_metrics(logit(probability), whole["isFraud"].to_numpy(), 0.5)
    capsys.readouterr()
    argv = ["score", str(path), "--model", str(model), "--out", str(tmp_path / "o.csv")]
    assert main([*argv, "--report"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") :]) == pytest.approx(expected, rel=1e-12)


def test_block_rows_must_be_whole_forward_passes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block_rows 1001 is not a multiple of 250"):
        score.score_file(tmp_path / "m.pt", tmp_path / "in.csv", tmp_path / "o.csv", False, 1001)
