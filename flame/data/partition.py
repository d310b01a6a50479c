"""Split PaySim rows into the server's held-out test set and N regions, and cache the result.

Every split is a function of a seeded hash of ``nameOrig`` only, so it is deterministic and any
process (server or region) computes the same assignment without talking to the others:
- test: hash fraction < ``test_fraction`` -> server-held test set, never given to a region;
- ``customer`` partitioning: the remaining rows go to region ``hash % N``;
- ``non-iid`` partitioning: each transaction type is spread over the regions with its own
  Dirichlet(1) weights (seeded), so regions differ in type mix and therefore in fraud rate;
- inside a region, hash fraction < ``val_fraction`` -> the region's local validation rows.

Prepared partitions are stored as ``.npy`` feature arrays under ``cache_dir/<key>/`` (key = data
source + split parameters) so later runs and every ClientApp process load them in milliseconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from flame.data.arrays import SPLITS, SplitWriter, load_split
from flame.data.cache import file_folder, load_all, partition_folder, partition_key, width
from flame.data.encode import mix, name_hash, type_codes
from flame.data.features import build_features, feature_names, labels
from flame.data.history import History, StepOrderError
from flame.data.loader import iter_paysim, read_paysim
from flame.data.schema import MAX_STEP, TYPES
from flame.data.spec import DataSpec
from flame.data.synth import generate
from flame.files import atomic_dir, atomic_file, writable_folder

log = logging.getLogger(__name__)
TEST = -1


def _unit(h: np.ndarray, stream: int) -> np.ndarray:
    """An independent uniform in [0, 1) per row for each ``stream`` (test, region, validation)."""
    with np.errstate(over="ignore"):
        return (
            mix(h + np.uint64(stream) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(11)
        ) / 2.0**53


def assign_regions(frame: pd.DataFrame, data: DataSpec, cutoff: int | None = None) -> np.ndarray:
    """Region index per row (0..N-1), or TEST (-1) for the server's held-out rows.

    With FLAME_SPLIT=time, rows after step ``cutoff`` (default: from this frame's steps) are
    the test set."""
    if data.split == "time" and cutoff is None:
        cutoff = time_cutoff(int(frame["step"].min()), int(frame["step"].max()), data)
    return _regions(frame, name_hash(frame["nameOrig"], data.seed), data, cutoff)


def time_cutoff(first: int, last: int, data: DataSpec) -> int:
    """The last training step of a time split: the final FLAME_TEST_FRACTION of the steps
    ``first..last`` are the test set."""
    return first + int((last - first + 1) * (1 - data.test_fraction)) - 1


def step_range(data: DataSpec) -> tuple[int, int]:
    """First and last step of the configured data (a validated pass, or the generator's range)."""
    source = data.source
    if source is None:
        return 1, MAX_STEP
    low, high = MAX_STEP + 1, 0
    for batch in tqdm(iter_paysim(source), desc="step range", unit="batch", leave=False):
        low, high = min(low, int(batch["step"].min())), max(high, int(batch["step"].max()))
    return low, high


def _regions(
    frame: pd.DataFrame, h: np.ndarray, data: DataSpec, cutoff: int | None = None
) -> np.ndarray:
    u_test, u_region = _unit(h, 1), _unit(h, 2)
    n = len(data.regions)
    if data.partitioning == "customer":
        region = np.minimum((u_region * n).astype(np.int64), n - 1)
    else:
        weights = np.random.default_rng(data.seed).dirichlet(np.ones(n), size=len(TYPES))
        cumulative = np.cumsum(weights, axis=1)[type_codes(frame["type"])]
        region = np.minimum((u_region[:, None] > cumulative).sum(axis=1), n - 1)
    if cutoff is not None:
        return np.where(frame["step"].to_numpy() > cutoff, TEST, region).astype(np.int64)
    return np.where(u_test < data.test_fraction, TEST, region).astype(np.int64)


def validation_mask(frame: pd.DataFrame, data: DataSpec) -> np.ndarray:
    return _unit(name_hash(frame["nameOrig"], data.seed), 3) < data.val_fraction


BATCH_ROWS = 500_000


def source_batches(data: DataSpec) -> Iterator[pd.DataFrame]:
    """Validated batches of the configured data: one CSV streamed, or the synthetic rows."""
    source = data.source
    if source is None:
        log.info("Generating %d synthetic PaySim rows (seed %d)", data.synth_rows, data.seed)
        frame = generate(data.synth_rows, data.seed, data.synth_fraud_rate)
        for start in range(0, len(frame), BATCH_ROWS):
            yield frame.iloc[start : start + BATCH_ROWS].reset_index(drop=True)
    elif source.is_dir():  # pooled sample files, de-duplicated across files: read whole
        log.info("Reading PaySim data from %s", source)
        yield read_paysim(source)
    else:
        log.info("Reading PaySim data from %s", source)
        yield from iter_paysim(source)


def split_batches(
    data: DataSpec,
) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
    """Each source batch with its rows' region (TEST for the server) and validation flags."""
    total = data.synth_rows if data.source is None else None
    cutoff = time_cutoff(*step_range(data), data) if data.split == "time" else None
    if cutoff is not None:
        log.info("Time split: steps after %d are the server's test set", cutoff)
    with tqdm(total=total, desc="preparing partitions", unit="row", unit_scale=True) as bar:
        for batch in source_batches(data):
            h = name_hash(batch["nameOrig"], data.seed)
            region = _regions(batch, h, data, cutoff)
            yield batch, region, _unit(h, 3) < data.val_fraction
            bar.update(len(batch))


def prepare(data: DataSpec) -> Path:
    """Folder with the ``test`` and ``region-<name>`` feature arrays and ``summary.json``.

    Streams the source batch by batch, so memory is bounded by one batch (plus the synthetic
    frame when no CSV is configured); built once per cache key, atomically.
    """
    folder = partition_folder(data)
    if (folder / "done").exists():
        return folder
    writable_folder(data.cache_dir, "FLAME_CACHE_DIR")
    with atomic_dir(folder) as staging:
        summary = _write_arrays(staging, data)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2))
        (staging / "done").touch()
    log.info("Prepared partitions in %s: %s", folder, summary)
    return folder


def _write_arrays(folder: Path, data: DataSpec) -> dict[str, dict[str, int]]:
    cols = len(feature_names())
    parts = {"test": SplitWriter(folder, "test", cols, ("all",))}
    parts |= {r: SplitWriter(folder, f"region-{r}", cols, SPLITS) for r in data.regions}
    frauds = dict.fromkeys(parts, 0)
    history = {name: History() for name in parts}  # each party's own rows only
    for batch, region, val in split_batches(data):
        for index, name in enumerate(parts):  # "test" first, then regions 0..N-1
            mask = region == (TEST if name == "test" else index - 1)
            rows = batch[mask]
            x, y = _features(rows, history[name], data.source), labels(rows)
            parts[name].append(x, y, None if name == "test" else val[mask])
            frauds[name] += int(y.sum())
    summary = {}
    for name, writer in parts.items():
        rows = writer.close()
        if not sum(rows.values()):
            raise ValueError(f"no rows fell into {name!r}; use more data or fewer regions")
        summary[name] = {"rows": sum(rows.values()), "frauds": frauds[name], **rows}
    return summary


def _features(rows: pd.DataFrame, history: History, source: Path | None) -> np.ndarray:
    """All features of one party's next rows (the history carried from its earlier rows)."""
    try:
        return build_features(rows, history=history)
    except StepOrderError as err:
        raise StepOrderError(f"{source or 'synthetic data'}: {err}") from None


def heldout_arrays(data: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """The server's held-out test features and labels."""
    if data.test_path is not None:
        if not data.test_path.exists():
            raise FileNotFoundError(f"FLAME_TEST_PATH {data.test_path} does not exist")
        return file_arrays(data.test_path, data, validation=False)["all"]
    return load_split(prepare(data), "test", "all", width(data))


def region_arrays(data: DataSpec, region: str) -> dict[str, tuple[np.ndarray, ...]]:
    """``{"train": (x, y), "val": (x, y)}`` of one region from the prepared partitions."""
    if region not in data.regions:
        raise ValueError(f"region {region!r} is not in FLAME_REGIONS {data.regions}")
    return load_all(prepare(data), f"region-{region}", SPLITS, width(data))


def file_arrays(
    path: Path, data: DataSpec, validation: bool = True
) -> dict[str, tuple[np.ndarray, ...]]:
    """Feature arrays of a data owner's own file (CSV or Parquet), cached by file identity.

    With ``validation`` the rows are split into ``train``/``val`` (the file's ``is_val``
    column, else the seeded hash); otherwise everything is ``all``.
    """
    folder = file_folder(path, data, validation)
    splits = SPLITS if validation else ("all",)
    if not (folder / "done").exists():
        writable_folder(data.cache_dir, "FLAME_CACHE_DIR")
        with atomic_dir(folder) as staging:
            writer, history = SplitWriter(staging, "data", len(feature_names()), splits), History()
            for batch in tqdm(_file_batches(path), desc=f"features of {path}", unit="batch"):
                val = None
                if validation:
                    val = (
                        batch["is_val"].to_numpy(bool)
                        if "is_val" in batch
                        else validation_mask(batch, data)
                    )
                writer.append(_features(batch, history, path), labels(batch), val)
            writer.close()
            (staging / "done").touch()
    return load_all(folder, "data", splits, width(data))


def _file_batches(path: Path) -> Iterator[pd.DataFrame]:
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
            yield batch.to_pandas()
    else:
        yield from iter_paysim(path)


def write_parts(data: DataSpec, outputs: dict[str, Path], keep_existing: bool) -> list[str]:
    """Write regions' rows (with ``is_val``) or the test set as Parquet, in one pass.

    ``outputs`` maps a part (a region name, its index in FLAME_REGIONS, or ``test``) to a file.
    A ``<out>.source`` file records which data and split produced it: an up-to-date file is
    left alone, and with ``keep_existing`` any existing file is (a region never replaces the
    partition a data owner's split step gave it with synthetic rows). Returns what was done.
    """
    key, todo, done = partition_key(data), {}, []
    for part, out in outputs.items():
        if part.isdigit() and int(part) < len(data.regions):
            part = data.regions[int(part)]
        if part != "test" and part not in data.regions:
            raise ValueError(f"part {part!r} is neither 'test' nor in FLAME_REGIONS {data.regions}")
        writable_folder(out.parent, f"--part {part}={out}: folder")
        stamp = out.with_name(out.name + ".source")
        if out.exists() and (keep_existing or (stamp.exists() and stamp.read_text() == key)):
            done.append(f"{part}: kept {out}")
        else:
            todo[TEST if part == "test" else data.regions.index(part)] = (part, out)
    if not todo:
        return done
    with ExitStack() as stack:
        staging = {i: stack.enter_context(atomic_file(out)) for i, (_, out) in todo.items()}
        writers: dict[int, pq.ParquetWriter] = {}
        for batch, region, val in split_batches(data):
            for i in todo:
                mask = region == i
                rows = batch[mask] if i == TEST else batch[mask].assign(is_val=val[mask])
                table = pa.Table.from_pandas(rows, preserve_index=False)
                if i not in writers:
                    writers[i] = pq.ParquetWriter(staging[i], table.schema)
                writers[i].write_table(table)
        for writer in writers.values():
            writer.close()
    for part, out in todo.values():
        out.with_name(out.name + ".source").write_text(key)
        done.append(f"{part}: wrote {out} ({pq_rows(out):,} rows)")
    return done


def pq_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows
