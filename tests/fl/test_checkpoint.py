"""Per-round checkpoints and resume bookkeeping (unit level; the kill-and-resume run with real
processes is in tests/test_faults.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flame.fl import checkpoint
from flame.settings import SettingsError, load_settings
from flame.track.tracking import CsvSink


def _save(folder: Path, rnd: int, value: float) -> None:
    state = checkpoint.Checkpoint(rnd, 0.3, checkpoint.fixed_settings(load_settings()))
    checkpoint.save(folder, state, {"net.0.weight": np.full((2, 2), value, np.float32)})


def test_save_replaces_atomically_and_loads_back(tmp_path: Path) -> None:
    _save(tmp_path, 1, 1.0)
    (tmp_path / ".checkpoint.0badc0de.tmp").mkdir()  # a ServerApp SIGKILLed while saving
    _save(tmp_path, 2, 2.0)
    state, arrays, _ = checkpoint.load(tmp_path)
    assert state.round == 2 and state.threshold == 0.3 and state.selected_val_counts == []
    assert np.array_equal(arrays["net.0.weight"], np.full((2, 2), 2.0, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_crash_between_renames_still_loads_the_previous_round(tmp_path: Path) -> None:
    _save(tmp_path, 1, 1.0)
    os.rename(tmp_path / "checkpoint", tmp_path / ".checkpoint.old")  # as if cut off there
    state, _, _ = checkpoint.load(tmp_path)
    assert state.round == 1


def test_resume_picks_the_newest_checkpointed_run_or_the_named_one(tmp_path: Path) -> None:
    for name in ("20260101-000000", "20260102-000000"):
        _save(tmp_path / name, 1, 0.0)
        time.sleep(0.02)
    (tmp_path / "20260103-000000").mkdir()  # newer, but no checkpoint
    settings = load_settings(runs_dir=tmp_path)
    assert checkpoint.resume_folder(settings) == tmp_path / "20260102-000000"
    named = load_settings(runs_dir=tmp_path, out_dir=tmp_path / "20260101-000000")
    assert checkpoint.resume_folder(named) == tmp_path / "20260101-000000"
    with pytest.raises(SettingsError, match="no checkpoint"):
        checkpoint.resume_folder(load_settings(out_dir=tmp_path / "20260103-000000"))
    with pytest.raises(SettingsError, match="no run with a checkpoint"):
        checkpoint.resume_folder(load_settings(runs_dir=tmp_path / "empty"))


def test_resume_refuses_changed_model_settings_and_dp(tmp_path: Path) -> None:
    _save(tmp_path, 2, 0.0)
    state, _, _ = checkpoint.load(tmp_path)
    checkpoint.check_compatible(state, load_settings(), tmp_path)
    with pytest.raises(SettingsError, match="FLAME_HIDDEN_SIZES"):
        checkpoint.check_compatible(state, load_settings(hidden_sizes="8"), tmp_path)
    with pytest.raises(SettingsError, match="FLAME_ALERT_RATE"):  # the threshold's rule
        checkpoint.check_compatible(state, load_settings(alert_rate=0.01), tmp_path)
    with pytest.raises(SettingsError, match="FLAME_DP"):
        dp = load_settings(dp=True, dp_noise_multiplier=1.0, hidden_sizes="64,32")
        checkpoint.check_compatible(state, dp, tmp_path)


def test_resumed_csv_drops_the_half_finished_round_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    sink = CsvSink(path)
    for rnd, kind in ((0, "server"), (1, "client:us"), (1, "server"), (2, "client:us")):
        sink.log(kind, rnd, "evaluate", {"loss": 0.1})
    sink.close()  # crashed during round 2: only round 1 was checkpointed
    resumed = CsvSink(path, resume_after=1)
    resumed.log("client:us", 2, "evaluate", {"loss": 0.2})
    resumed.close()
    table = pd.read_csv(path)
    assert list(zip(table["round"], table["kind"], strict=True)) == [
        (0, "server"), (1, "client:us"), (1, "server"), (2, "client:us"),
    ]  # fmt: skip
    assert table["loss"].iloc[-1] == 0.2
    CsvSink(path).close()  # a new (not resumed) run starts a fresh file
    assert len(pd.read_csv(path)) == 0


def test_resumed_csv_keeps_a_checkpointed_rounds_training_until_its_model_is_scored(
    tmp_path: Path,
) -> None:
    """One message per round: round 2's model is scored in round 3's train replies. Killed in
    round 3 after those came in, the resume from checkpoint 2 keeps round 2's training rows and
    drops its evaluation (round 3 scores it again), so no row is logged twice."""
    path = tmp_path / "metrics.csv"
    sink = CsvSink(path)
    logged = [(1, "train"), (2, "train"), (1, "evaluate"), (3, "train"), (2, "evaluate")]
    for rnd, stage in logged:
        sink.log("client:us", rnd, stage, {"loss": 0.1})
    sink.close()
    CsvSink(path, resume_after=2, evaluated_through=1).close()
    table = pd.read_csv(path)
    assert list(zip(table["round"], table["stage"], strict=True)) == [
        (1, "train"), (2, "train"), (1, "evaluate"),
    ]  # fmt: skip


def test_the_selected_models_validation_histogram_survives_a_resume(tmp_path: Path) -> None:
    fixed = checkpoint.fixed_settings(load_settings())
    state = checkpoint.Checkpoint(3, 0.4, fixed, 2, 0.45, 0.7, [5.0, 0.0, 2.0])
    weights = {"net.0.weight": np.ones((2, 2), np.float32)}
    checkpoint.save(tmp_path, state, weights, weights)
    loaded, _, selected = checkpoint.load(tmp_path)
    assert loaded.selected_val_counts == [5.0, 0.0, 2.0] and selected is not None
