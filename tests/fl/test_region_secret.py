"""flame/fl/region_secret.py: the secret the region's DP noise comes from."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from flame.fl.region_secret import SIZE, SecretStream, derived_key, load_secret, region_folder


def test_the_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    folder = region_folder(tmp_path, "us")
    first = load_secret(folder)
    assert len(first) == SIZE and load_secret(folder) == first
    assert stat.S_IMODE((folder / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert load_secret(region_folder(tmp_path, "eu")) != first
    assert [p.name for p in folder.iterdir()] == ["secret"]  # no draft left behind


def test_a_damaged_secret_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"short")
    with pytest.raises(ValueError, match="holds 5"):
        load_secret(tmp_path)


def test_each_release_has_its_own_key_and_stream() -> None:
    secret = bytes(range(SIZE))
    key = derived_key(secret, "run-1", 3, 17)
    assert key == derived_key(secret, "run-1", 3, 17)
    assert key != derived_key(secret, "run-1", 3, 18)
    assert key != derived_key(bytes(SIZE), "run-1", 3, 17)  # the run settings alone: no key
    a, b = SecretStream(key).normal(10_001), SecretStream(key).normal(10_001)
    assert np.array_equal(a, b) and len(a) == 10_001
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.05
    other = SecretStream(key, purpose=b"sampling").normal(10_001)
    assert abs(np.corrcoef(a, other)[0, 1]) < 0.05
    u = SecretStream(key).uniform(10_000)
    assert u.min() > 0 and u.max() <= 1
