"""Unit tests of the deployment helpers: partition files per container, launcher config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flame.data.partition import file_arrays, region_arrays, write_parts
from flame.ops.launch import run_config, write_connection
from flame.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_write_parts_by_name_index_and_test_in_one_pass(tmp_path: Path) -> None:
    settings = load_settings(synth_rows=5_000).data_spec()
    outputs = {"0": tmp_path / "us.parquet", "eu": tmp_path / "eu.parquet"}
    outputs["test"] = tmp_path / "test.parquet"
    done = write_parts(settings, outputs, False)
    assert [line.split(": ")[1].split()[0] for line in done] == ["wrote"] * 3
    parts = [pd.read_parquet(tmp_path / f"{n}.parquet") for n in ("us", "eu", "test")]
    assert sum(len(p) for p in parts) == 5_000
    assert "is_val" in parts[0] and "is_val" not in parts[2]
    names = [set(p["nameOrig"]) for p in parts]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    # the file's feature cache equals the prepared partition's arrays for that region
    mine, prepared = file_arrays(outputs["0"], settings), region_arrays(settings, "us")
    for split in ("train", "val"):
        assert np.array_equal(mine[split][0], prepared[split][0])


def test_write_parts_keeps_or_replaces(tmp_path: Path) -> None:
    out = {"us": tmp_path / "us.parquet"}
    first = load_settings(synth_rows=3_000).data_spec()
    write_parts(first, out, False)
    assert "kept" in write_parts(first, out, False)[0]  # up to date
    other = load_settings(synth_rows=4_000).data_spec()
    assert "kept" in write_parts(other, out, True)[0]  # keep_existing wins
    assert "wrote" in write_parts(other, out, False)[0]  # stale: replaced
    with pytest.raises(ValueError, match="FLAME_REGIONS"):
        write_parts(first, {"apac": tmp_path / "x.parquet"}, False)


def test_run_config_covers_every_pyproject_key() -> None:
    settings = load_settings(num_server_rounds=7, learning_rate=0.01)
    config = run_config(settings, ROOT)
    parsed = tomllib.loads("\n".join(config.split(" ")))
    keys = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert set(parsed) == set(keys)
    assert parsed["num-server-rounds"] == 7 and parsed["learning-rate"] == 0.01


def test_write_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    config = tomllib.loads(write_connection("superlink:8000", None).read_text())
    assert config["superlink"]["flame"] == {"address": "superlink:8000", "insecure": True}
    (tmp_path / "ca.crt").write_text("x")
    config = tomllib.loads(write_connection("h:8000", tmp_path / "ca.crt").read_text())
    assert config["superlink"]["flame"]["root-certificates"].endswith("ca.crt")
