"""Which rows a run reads and how they are split: the values every data function takes.

Built once at a process's boundary (``FlameSettings.data_spec``); ``flame/data`` never sees
the settings object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines the prepared arrays, and where they are cached."""

    source: Path | None  # a PaySim CSV, Parquet file or folder of CSVs; None = synthetic rows
    synth_rows: int
    synth_fraud_rate: float
    seed: int
    regions: tuple[str, ...]
    partitioning: str  # "customer" or "non-iid"
    split: str  # "hash" or "time"
    test_fraction: float
    val_fraction: float
    drop_balance_features: bool
    cache_dir: Path
    test_path: Path | None = None  # the server's own test file, instead of the split's
