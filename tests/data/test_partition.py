from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import numpy as np
import pandas as pd

from flame.data.features import build_features, feature_names, labels
from flame.data.partition import (
    TEST,
    assign_regions,
    heldout_arrays,
    name_hash,
    prepare,
    region_arrays,
    step_range,
    time_cutoff,
    validation_mask,
)
from flame.data.spec import DataSpec
from flame.data.synth import generate, write_csv
from flame.settings import load_settings


def spec(**settings: object) -> DataSpec:
    """What the data functions get: the data part of settings read as a process would."""
    return load_settings(**settings).data_spec()  # type: ignore[arg-type]


def test_regions_are_disjoint_cover_everything_and_are_deterministic() -> None:
    data = spec(regions="us,eu,apac")
    frame = generate(30_000, seed=1)
    region = assign_regions(frame, data)
    assert set(np.unique(region)) == {TEST, 0, 1, 2}
    assert abs((region == TEST).mean() - data.test_fraction) < 0.02
    assert np.array_equal(region, assign_regions(frame, data))
    shuffled = frame.sample(frac=1.0, random_state=0)
    assert np.array_equal(assign_regions(shuffled, data), region[shuffled.index])
    other_seed = assign_regions(frame, spec(regions="us,eu,apac", seed=1))
    assert not np.array_equal(region, other_seed)


def test_time_split_tests_on_the_last_steps_and_trains_on_earlier_ones(tmp_path: Path) -> None:
    frame = generate(30_000, seed=3)
    frame = frame[frame["step"] <= 500].reset_index(drop=True)
    csv = tmp_path / "early.csv"
    write_csv(frame, csv)
    data = spec(split="time", data_path=csv)
    assert step_range(data) == (int(frame["step"].min()), 500)
    cutoff = time_cutoff(1, 500, data)
    assert cutoff == 400  # steps 401..500: the last 20 % of the steps
    region = assign_regions(frame, data)
    steps = frame["step"].to_numpy()
    assert (steps[region == TEST] > cutoff).all() and (steps[region != TEST] <= cutoff).all()
    assert set(np.unique(region)) == {TEST, 0, 1}
    x_test, _ = heldout_arrays(data)  # the prepared partitions use the same cut
    assert len(x_test) == int((steps > cutoff).sum())
    hashed = spec(data_path=csv)
    assert len(heldout_arrays(hashed)[0]) != len(x_test)  # a separate cache entry


def test_non_iid_regions_differ_in_type_mix() -> None:
    frame = generate(60_000, seed=5)
    mixes = []
    for scheme in ("customer", "non-iid"):
        region = assign_regions(frame, spec(partitioning=scheme))
        mix = pd.crosstab(region[region != TEST], frame["type"][region != TEST], normalize="index")
        mixes.append((mix.loc[0] - mix.loc[1]).abs().max())
    assert mixes[0] < 0.02 < mixes[1]


def test_prepare_writes_cached_feature_arrays_covering_every_row() -> None:
    data = spec(synth_rows=20_000)
    folder = prepare(data)
    assert prepare(data) == folder  # cached
    frame = generate(20_000, data.seed, data.synth_fraud_rate)
    region, val = assign_regions(frame, data), validation_mask(frame, data)
    x_test, _ = heldout_arrays(data)
    # same rows, same order; history features from the server's own rows only
    drop = data.drop_balance_features  # the default model's features
    assert np.array_equal(x_test, build_features(frame[region == TEST], drop))
    for i, name in enumerate(data.regions):
        arrays = region_arrays(data, name)
        mask = region == i
        own = build_features(frame[mask], drop)  # a region's history: its own rows (train, val)
        assert np.array_equal(arrays["train"][0], own[~val[mask]])
        assert np.array_equal(arrays["val"][1], labels(frame)[mask & val])
    assert 0.1 < val.mean() < 0.3


def test_drop_balances_is_a_column_slice_of_the_cache() -> None:
    with_balances = spec(synth_rows=5_000, drop_balance_features=False)
    full = region_arrays(with_balances, "us")["train"][0]
    assert full.shape[1] == len(feature_names(False))
    dropped = region_arrays(spec(synth_rows=5_000, drop_balance_features=True), "us")
    assert dropped["train"][0].shape[1] == len(feature_names(True))
    assert np.array_equal(dropped["train"][0], full[:, : len(feature_names(True))])


def test_name_hash_is_stable_and_spreads() -> None:
    names = pd.Series(["C1", "C2", "C12", "C1231006815", "M1979787155", "", "é"])
    h = name_hash(names, seed=42)
    assert len(set(h.tolist())) == len(names)
    assert np.array_equal(h, name_hash(names.astype(object), seed=42))  # storage-independent
    assert not np.array_equal(h, name_hash(names, seed=43))
    assert (
        int(name_hash(pd.Series(["C1231006815"]), seed=0)[0]) == 16483481784760731969
    )  # pinned: splits must not move
    bits = np.unpackbits(name_hash(pd.Series([f"C{i}" for i in range(4096)]), 1).view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01


def test_streamed_preparation_equals_whole_file(tmp_path: Path) -> None:
    frame = generate(12_000, seed=3)
    write_csv(frame, tmp_path / "p.csv")
    data = spec(data_path=tmp_path / "p.csv")
    with patch("flame.data.loader.BLOCK_BYTES", 64 << 10):  # ~30 batches
        streamed = region_arrays(data, "eu")["train"][0]
    mask = assign_regions(frame, data) == 1
    drop = data.drop_balance_features
    whole = build_features(frame[mask], drop)[~validation_mask(frame, data)[mask]]
    assert np.allclose(streamed, whole, atol=1e-6)
