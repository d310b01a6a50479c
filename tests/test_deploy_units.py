"""Unit tests of the deployment helpers: partition files per container, launcher config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from flame.launch import run_config, write_connection
from flame.partition import write_part
from flame.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_write_part_by_name_index_and_test(tmp_path: Path) -> None:
    settings = load_settings(synth_rows=5_000)
    assert write_part(settings, "0", tmp_path / "us.parquet", False).startswith("wrote")
    assert write_part(settings, "eu", tmp_path / "eu.parquet", False).startswith("wrote")
    assert write_part(settings, "test", tmp_path / "test.parquet", False).startswith("wrote")
    parts = [pd.read_parquet(tmp_path / f"{n}.parquet") for n in ("us", "eu", "test")]
    assert sum(len(p) for p in parts) == 5_000
    assert "is_val" in parts[0] and "is_val" not in parts[2]
    names = [set(p["nameOrig"]) for p in parts]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])


def test_write_part_keeps_or_replaces(tmp_path: Path) -> None:
    out = tmp_path / "us.parquet"
    first = load_settings(synth_rows=3_000)
    write_part(first, "us", out, False)
    assert write_part(first, "us", out, False).startswith("kept")  # up to date
    other = load_settings(synth_rows=4_000)
    assert write_part(other, "us", out, True).startswith("kept")  # keep_existing wins
    assert write_part(other, "us", out, False).startswith("wrote")  # stale: replaced
    with pytest.raises(ValueError, match="FLAME_REGIONS"):
        write_part(first, "apac", out, False)


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
