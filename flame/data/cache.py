"""Where prepared data lives: cache keys and the pandas-free fast path that ClientApps use.

A key is a hash of everything that determines the cached content (data identity, split and
feature parameters), so a changed file or setting never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from flame.data.arrays import SPLITS, load_split
from flame.data.features import FEATURE_VERSION, feature_names
from flame.data.spec import DataSpec

Split = tuple[np.ndarray, np.ndarray]


def _digest(params: object) -> str:
    return hashlib.sha256(json.dumps(params).encode()).hexdigest()[:16]


def partition_key(data: DataSpec) -> str:
    source = data.source
    if source is None:
        origin: object = ["synthetic", data.synth_rows, data.synth_fraud_rate]
    else:
        files = sorted(source.glob("*.csv")) if source.is_dir() else [source]
        origin = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    params = [origin, data.seed, data.regions, data.partitioning, data.split]
    return _digest([*params, data.test_fraction, data.val_fraction, FEATURE_VERSION])


def partition_folder(data: DataSpec) -> Path:
    return data.cache_dir / partition_key(data)


def file_folder(path: Path, data: DataSpec, validation: bool) -> Path:
    stat = path.stat()
    params = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, FEATURE_VERSION]
    params += [data.seed, data.val_fraction, validation]
    return data.cache_dir / "files" / _digest(params)


def width(data: DataSpec) -> int:
    return len(feature_names(data.drop_balance_features))


def load_all(folder: Path, name: str, splits: tuple[str, ...], cols: int) -> dict[str, Split]:
    return {s: load_split(folder, name, s, cols) for s in splits}


def cached_region(data: DataSpec, region: str, data_path: str) -> dict[str, Split] | None:
    """A region's train/val arrays if already prepared (numpy only), else None."""
    if data_path:
        folder, name = file_folder(Path(data_path), data, True), "data"
    else:
        folder, name = partition_folder(data), f"region-{region}"
    if not (folder / "done").exists():
        return None
    return load_all(folder, name, SPLITS, width(data))
