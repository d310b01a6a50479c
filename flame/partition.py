"""Split PaySim rows into the server's held-out test set and N regions, and cache the result.

Every split is a function of a seeded hash of ``nameOrig`` only, so it is deterministic and any
process (server or region) computes the same assignment without talking to the others:
- test: hash fraction < ``test_fraction`` -> server-held test set, never given to a region;
- ``customer`` partitioning: the remaining rows go to region ``hash % N``;
- ``non-iid`` partitioning: each transaction type is spread over the regions with its own
  Dirichlet(1) weights (seeded), so regions differ in type mix and therefore in fraud rate;
- inside a region, hash fraction < ``val_fraction`` -> the region's local validation rows.

Prepared partitions are stored as Parquet under ``cache_dir/<key>/`` (key = data source +
split parameters) so later runs and every ClientApp process load them in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from flame.loader import read_paysim
from flame.schema import TYPES
from flame.settings import FlameSettings
from flame.synth import generate

log = logging.getLogger(__name__)
TEST = -1


def _unit_hash(names: pd.Series, seed: int, salt: str) -> tuple[np.ndarray, np.ndarray]:
    key = hashlib.sha256(f"{salt}:{seed}".encode()).hexdigest()[:16]
    h = pd.util.hash_pandas_object(names.astype("string"), index=False, hash_key=key).to_numpy()
    return (h & 0xFFFFFFFF) / 2.0**32, (h >> np.uint64(32)) / 2.0**32


def assign_regions(frame: pd.DataFrame, settings: FlameSettings) -> np.ndarray:
    """Region index per row (0..N-1), or TEST (-1) for the server's held-out rows."""
    u_test, u_region = _unit_hash(frame["nameOrig"], settings.seed, "region")
    n = len(settings.regions)
    if settings.partitioning == "customer":
        region = np.minimum((u_region * n).astype(np.int64), n - 1)
    else:
        weights = np.random.default_rng(settings.seed).dirichlet(np.ones(n), size=len(TYPES))
        codes = pd.Categorical(frame["type"], categories=TYPES).codes
        cumulative = np.cumsum(weights, axis=1)[codes]
        region = np.minimum((u_region[:, None] > cumulative).sum(axis=1), n - 1)
    return np.where(u_test < settings.test_fraction, TEST, region).astype(np.int64)


def validation_mask(frame: pd.DataFrame, settings: FlameSettings) -> np.ndarray:
    u_val, _ = _unit_hash(frame["nameOrig"], settings.seed, "validation")
    return u_val < settings.val_fraction


def source_frame(settings: FlameSettings) -> pd.DataFrame:
    source = settings.data_source()
    if source is None:
        log.info(
            "Generating %d synthetic PaySim rows (seed %d)", settings.synth_rows, settings.seed
        )
        return generate(settings.synth_rows, settings.seed, settings.synth_fraud_rate)
    log.info("Reading PaySim data from %s", source)
    return read_paysim(source)


def cache_key(settings: FlameSettings) -> str:
    source = settings.data_source()
    if source is None:
        origin: object = ["synthetic", settings.synth_rows, settings.synth_fraud_rate]
    else:
        files = sorted(source.glob("*.csv")) if source.is_dir() else [source]
        origin = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    params = [origin, settings.seed, settings.regions, settings.partitioning]
    params += [settings.test_fraction, settings.val_fraction]
    return hashlib.sha256(json.dumps(params).encode()).hexdigest()[:16]


def prepare(settings: FlameSettings) -> Path:
    """Folder holding ``test.parquet`` and ``region-<name>.parquet``; built once per key."""
    folder = settings.cache_dir / cache_key(settings)
    if (folder / "done").exists():
        return folder
    frame = source_frame(settings)
    region = assign_regions(frame, settings)
    val = validation_mask(frame, settings)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=settings.cache_dir))
    frame[region == TEST].to_parquet(staging / "test.parquet", index=False)
    summary = {"test": {"rows": int((region == TEST).sum())}}
    for i, name in enumerate(settings.regions):
        part = frame[region == i].assign(is_val=val[region == i])
        part.to_parquet(staging / f"region-{name}.parquet", index=False)
        summary[name] = {"rows": len(part), "frauds": int(part["isFraud"].sum())}
    (staging / "summary.json").write_text(json.dumps(summary, indent=2))
    (staging / "done").touch()
    try:
        os.rename(staging, folder)
    except OSError:  # another process finished first; its result is identical
        shutil.rmtree(staging, ignore_errors=True)
    log.info("Prepared partitions in %s: %s", folder, summary)
    return folder


def load_test(settings: FlameSettings) -> pd.DataFrame:
    if settings.test_path is not None:
        if not settings.test_path.exists():
            raise FileNotFoundError(f"FLAME_TEST_PATH {settings.test_path} does not exist")
        return pd.read_parquet(settings.test_path)
    return pd.read_parquet(prepare(settings) / "test.parquet")


def write_part(settings: FlameSettings, part: str, out: Path, keep_existing: bool) -> str:
    """Write one region's rows (with ``is_val``) or the test set (``test``) to ``out``.

    ``part`` is a region name, its index in FLAME_REGIONS, or ``test``.
    A ``<out>.source`` file records which data and split produced it: an up-to-date file is
    left alone, and with ``keep_existing`` any existing file is (a region never replaces the
    partition a data owner's split step gave it with synthetic rows). Returns what was done.
    """
    if part.isdigit() and int(part) < len(settings.regions):
        part = settings.regions[int(part)]
    if part != "test" and part not in settings.regions:
        raise ValueError(f"part {part!r} is neither 'test' nor in FLAME_REGIONS {settings.regions}")
    stamp, key = out.with_name(out.name + ".source"), cache_key(settings)
    if out.exists() and (keep_existing or (stamp.exists() and stamp.read_text() == key)):
        return f"kept {out}"
    name = "test.parquet" if part == "test" else f"region-{part}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp")
    shutil.copyfile(prepare(settings) / name, staging)
    os.replace(staging, out)
    stamp.write_text(key)
    return f"wrote {out} ({pq_rows(out):,} rows)"


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def load_region(settings: FlameSettings, region: str) -> pd.DataFrame:
    """A region's rows with an ``is_val`` column (local validation split)."""
    if region not in settings.regions:
        raise ValueError(f"region {region!r} is not in FLAME_REGIONS {settings.regions}")
    return pd.read_parquet(prepare(settings) / f"region-{region}.parquet")


def load_region_file(path: Path, settings: FlameSettings) -> pd.DataFrame:
    """A region's own data file (deployment): CSV(s) or Parquet, split into train/val locally."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else read_paysim(path)
    if "is_val" not in frame:
        frame = frame.assign(is_val=validation_mask(frame, settings))
    return frame
