"""Cache keys change with everything that shapes the cached rows; ClientApps read them fast."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from flame.data.arrays import SplitWriter
from flame.data.cache import cached_region, file_folder, partition_folder, partition_key, width
from flame.data.spec import DataSpec
from flame.settings import load_settings


def spec(**settings: object) -> DataSpec:
    """What the data functions get: the data part of settings read as a process would."""
    return load_settings(**settings).data_spec()  # type: ignore[arg-type]


def test_the_partition_key_follows_every_setting_that_shapes_the_partitions() -> None:
    base = spec(data_path=None, synth_rows=1000)
    key = partition_key(base)
    changed = [
        {"seed": base.seed + 1}, {"regions": ("us", "eu", "apac")}, {"synth_rows": 2000},
        {"val_fraction": 0.3}, {"test_fraction": 0.3}, {"split": "time"},
        {"partitioning": "non-iid"},
    ]  # fmt: skip
    for change in changed:
        assert partition_key(replace(base, **change)) != key, change
    assert partition_key(spec(data_path=None, synth_rows=1000)) == key
    # the model's width reads the same cache (balance-free features are a column prefix)
    assert partition_key(replace(base, drop_balance_features=False)) == key


def test_a_changed_file_gets_a_new_folder(tmp_path: Path) -> None:
    site = tmp_path / "site.csv"
    site.write_text("step\n1\n")
    data = spec(cache_dir=tmp_path / "cache")
    before = file_folder(site, data, validation=True)
    assert file_folder(site, data, validation=False) != before
    site.write_text("step\n1\n2\n")
    os.utime(site, ns=(1, 1))
    assert file_folder(site, data, validation=True) != before


def test_a_region_is_read_from_the_cache_only_once_it_is_complete(tmp_path: Path) -> None:
    data = spec(cache_dir=tmp_path / "cache", data_path=None, synth_rows=1000)
    folder = partition_folder(data)
    folder.mkdir(parents=True)
    full = width(replace(data, drop_balance_features=False))
    writer = SplitWriter(folder, "region-eu", full, ("train", "val"))
    x = np.ones((4, full), dtype=np.float32)
    writer.append(x, np.zeros(4), np.array([False, False, True, False]))
    writer.close()
    assert cached_region(data, "eu", "") is None  # no `done` marker: still being written
    (folder / "done").touch()
    found = cached_region(data, "eu", "")
    assert found is not None
    assert found["train"][0].shape == (3, width(data)) and len(found["val"][1]) == 1
