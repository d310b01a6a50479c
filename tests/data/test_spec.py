"""flame/data/spec.py: the values every data function takes, built from the settings once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flame.data.spec import DataSpec
from flame.settings import load_settings


def _spec(**changes: object) -> DataSpec:
    values: dict[str, object] = {
        "source": None, "synth_rows": 1_000, "synth_fraud_rate": 0.01, "seed": 7,
        "regions": ("us", "eu"), "partitioning": "customer", "split": "hash",
        "test_fraction": 0.2, "val_fraction": 0.2, "drop_balance_features": True,
        "cache_dir": Path("/tmp/cache"),
    }  # fmt: skip
    return DataSpec(**(values | changes))  # type: ignore[arg-type]


def test_a_spec_is_a_frozen_value_equal_specs_hash_alike() -> None:
    spec = _spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 8  # type: ignore[misc]
    assert spec == _spec() and hash(spec) == hash(_spec())
    assert {spec: "cached"}[_spec()] == "cached"  # usable as a cache key
    assert spec != _spec(seed=8) and spec != _spec(regions=("us",))
    changed = dataclasses.replace(spec, split="time")
    assert (changed.split, spec.split) == ("time", "hash")


def test_only_the_servers_test_file_is_optional() -> None:
    assert _spec().test_path is None
    assert _spec(test_path=Path("test.parquet")).test_path == Path("test.parquet")
    required = {f.name for f in dataclasses.fields(DataSpec) if f.default is dataclasses.MISSING}
    assert required == {f.name for f in dataclasses.fields(DataSpec)} - {"test_path"}
    with pytest.raises(TypeError, match="cache_dir"):
        DataSpec(None, 1_000, 0.01, 7, ("us",), "customer", "hash", 0.2, 0.2, True)  # type: ignore[call-arg]


def test_the_settings_spec_carries_every_data_setting(tmp_path: Path) -> None:
    source, test = tmp_path / "paysim.csv", tmp_path / "test.parquet"
    settings = load_settings(
        data_path=source, synth_rows=3_000, synth_fraud_rate=0.05, seed=11,
        regions="us,eu,apac", partitioning="non-iid", split="time", test_fraction=0.3,
        val_fraction=0.1, drop_balance_features=False, cache_dir=tmp_path / "c", test_path=test,
    )  # fmt: skip
    assert settings.data_spec() == DataSpec(
        source=source, synth_rows=3_000, synth_fraud_rate=0.05, seed=11,
        regions=("us", "eu", "apac"), partitioning="non-iid", split="time", test_fraction=0.3,
        val_fraction=0.1, drop_balance_features=False, cache_dir=tmp_path / "c", test_path=test,
    )  # fmt: skip
    # the settings' list of regions becomes a tuple: the spec hashes (a list would not)
    assert hash(settings.data_spec()) == hash(settings.data_spec())


def test_no_data_file_means_synthetic_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no Kaggle file under data/ here
    spec = load_settings(data_path=None, synth_rows=2_000).data_spec()
    assert spec.source is None and spec.synth_rows == 2_000
    assert spec.test_path is None
