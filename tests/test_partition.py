from __future__ import annotations

import numpy as np
import pandas as pd

from flame.partition import TEST, assign_regions, load_region, load_test, prepare
from flame.settings import load_settings
from flame.synth import generate


def test_regions_are_disjoint_cover_everything_and_are_deterministic() -> None:
    settings = load_settings(regions="us,eu,apac")
    frame = generate(30_000, seed=1)
    region = assign_regions(frame, settings)
    assert set(np.unique(region)) == {TEST, 0, 1, 2}
    assert abs((region == TEST).mean() - settings.test_fraction) < 0.02
    assert np.array_equal(region, assign_regions(frame, settings))
    shuffled = frame.sample(frac=1.0, random_state=0)
    assert np.array_equal(assign_regions(shuffled, settings), region[shuffled.index])
    other_seed = assign_regions(frame, load_settings(regions="us,eu,apac", seed=1))
    assert not np.array_equal(region, other_seed)


def test_non_iid_regions_differ_in_type_mix() -> None:
    frame = generate(60_000, seed=5)
    mixes = []
    for scheme in ("customer", "non-iid"):
        region = assign_regions(frame, load_settings(partitioning=scheme))
        mix = pd.crosstab(region[region != TEST], frame["type"][region != TEST], normalize="index")
        mixes.append((mix.loc[0] - mix.loc[1]).abs().max())
    assert mixes[0] < 0.02 < mixes[1]


def test_prepare_writes_disjoint_cached_partitions() -> None:
    settings = load_settings(synth_rows=20_000)
    folder = prepare(settings)
    assert prepare(settings) == folder  # cached
    test = load_test(settings)
    us, eu = load_region(settings, "us"), load_region(settings, "eu")
    assert len(test) + len(us) + len(eu) == 20_000
    keys = [set(zip(f["step"], f["nameOrig"], f["amount"], strict=True)) for f in (test, us, eu)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert 0.1 < us["is_val"].mean() < 0.3
