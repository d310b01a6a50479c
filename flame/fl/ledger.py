"""A region's privacy ledger: every release of its data, kept in its state folder.

One SQLite database per region (``FLAME_STATE_DIR/<region>/ledger.db``, write-ahead log, every
commit synced to disk) with one row per release: a round's DP-SGD steps, or one evaluation
answer. A release is charged, checked and committed in one transaction *before* the region
answers, so a crash between charging and answering over-counts, never under-counts. The rows
outlive runs, SuperNode restarts and container restarts; ``flame ledger`` prints them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

FILE = "ledger.db"
TRAIN, EVALUATE = "train", "evaluate"

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: each release's noise seed
    at TEXT NOT NULL,          -- UTC time the release was charged
    run_id TEXT NOT NULL,      -- Flower run id
    app TEXT NOT NULL,         -- FAB hash of the app that asked ('' in simulation)
    round INTEGER NOT NULL,
    kind TEXT NOT NULL,        -- 'train' (a round of DP-SGD steps) or 'evaluate' (one answer)
    noise REAL NOT NULL,       -- noise multiplier (evaluation: histogram noise, 0 = exact)
    rate REAL NOT NULL,        -- Poisson sampling rate as accounted (evaluation: 1)
    steps INTEGER NOT NULL,
    delta REAL NOT NULL,       -- the run's δ
    epsilon REAL NOT NULL      -- the run's ε (at its δ) once this release is made
)
"""


@dataclass(frozen=True)
class Release:
    run_id: str
    app: str
    round: int
    kind: str
    noise: float
    rate: float
    steps: int
    delta: float
    epsilon: float = 0.0
    at: str = ""


COLUMNS = [f.name for f in fields(Release)]


class Ledger:
    """The ledger of the region whose state folder is ``folder``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / FILE
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)

    def releases(self, run_id: str | None = None) -> list[Release]:
        query = f"SELECT {', '.join(COLUMNS)} FROM releases"
        args: tuple[str, ...] = ()
        if run_id is not None:
            query, args = query + " WHERE run_id = ?", (run_id,)
        return [Release(*row) for row in self.db.execute(query + " ORDER BY id", args)]

    @contextmanager
    def charging(self) -> Iterator[Charge]:
        """A write transaction that no other task can interleave with: read what is spent,
        check, add; committed (and synced) on leaving, rolled back if the check raised."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield Charge(self)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Charge:
    """Inside ``Ledger.charging``: what is spent so far, and adding one release."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.spent = ledger.releases()

    def add(self, release: Release) -> int:
        """Add ``release``; returns its number in the ledger (never reused)."""
        row = (*astuple(release)[:-1], datetime.now(UTC).isoformat(timespec="seconds"))
        marks = ", ".join("?" * len(COLUMNS))
        query = f"INSERT INTO releases ({', '.join(COLUMNS)}) VALUES ({marks})"
        number = self.ledger.db.execute(query, row).lastrowid
        assert number is not None
        return number


def ledgers(state_dir: Path) -> dict[str, Path]:
    """Each region's state folder under ``state_dir`` that holds a ledger."""
    if not state_dir.is_dir():
        return {}
    return {p.parent.name: p.parent for p in sorted(state_dir.glob(f"*/{FILE}"))}
