"""Where a scorer keeps its region's transaction history: Redis, or SQLite in the state folder.

Both keep, per payee (the 64-bit hash of ``nameDest``, never the name), the number of rows
that went to it, forgotten ``ttl`` seconds after the payee's last row; and the (step, amount)
keys of TRANSFERs, forgotten ``ttl`` seconds after their step's last TRANSFER. A batch is one
atomic exchange (a Lua script in Redis, an immediate transaction in SQLite), so replicas of a
region's scorer can share one store. Redis calls time out after 2 s and are not retried (an
exchange that ran but lost its reply would count twice): the request gets a 503 naming the store
and the caller sends it again. Unlike ``MemoryStore`` they accept rows of an earlier
step than ones already scored (a late transaction): it sees everything seen so far.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from flame.data.history import STEP_KEY, HistoryStore, MemoryStore

SWEEP_EVERY = 60.0  # seconds between SQLite's deletions of expired rows
LOCK_WAIT = 5.0  # seconds a SQLite exchange waits for another process's transaction

EXCHANGE = """
local p, ttl, i = ARGV[1], tonumber(ARGV[2]), 4
local counts, seen = {}, {}
for j = 1, tonumber(ARGV[3]) do
  local key, add = p .. ':d:' .. ARGV[i], tonumber(ARGV[i + 1])
  counts[j] = redis.call('INCRBY', key, add) - add
  redis.call('EXPIRE', key, ttl)
  i = i + 2
end
local asked = tonumber(ARGV[i]); i = i + 1
for j = 1, asked do
  seen[j] = redis.call('SISMEMBER', p .. ':t:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
local transfers = tonumber(ARGV[i]); i = i + 1
for j = 1, transfers do
  local key = p .. ':t:' .. ARGV[i]
  redis.call('SADD', key, ARGV[i + 1])
  redis.call('EXPIRE', key, ttl)
  i = i + 2
end
return {counts, seen}
"""


class HistoryUnavailable(RuntimeError):
    """The history store cannot be reached: a row is never scored without its history."""


def _step_cents(keys: np.ndarray) -> list[int]:
    return np.column_stack([keys // STEP_KEY, keys % STEP_KEY]).ravel().tolist()


class RedisStore:
    def __init__(self, client: Any, prefix: str, ttl: int) -> None:
        self.client, self.prefix, self.ttl = client, prefix, ttl
        self.script = client.register_script(EXCHANGE)

    def check_order(self, first_step: int) -> None:
        pass  # transfers are kept per step: a late row reads its own step's

    def exchange(
        self,
        payees: np.ndarray,
        adds: np.ndarray,
        asked: np.ndarray,
        transfers: np.ndarray,
        last_step: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        import redis

        args: list[Any] = [self.prefix, self.ttl, len(payees)]
        args += [
            x for p, n in zip(payees.tolist(), adds.tolist(), strict=True) for x in (f"{p:016x}", n)
        ]
        args += [len(asked), *_step_cents(asked), len(transfers), *_step_cents(transfers)]
        try:  # never retried: a script that ran before its reply was lost would count twice
            counts, seen = self.script(args=args)
        except redis.RedisError as err:
            raise HistoryUnavailable(self._unreachable(err)) from None
        return np.asarray(counts, dtype=np.int64), np.asarray(seen, dtype=bool)

    def problem(self) -> str:
        import redis

        try:
            self.client.ping()
        except redis.RedisError as err:
            return self._unreachable(err)
        return ""

    def _unreachable(self, err: Exception) -> str:
        return f"history store {self.describe()} unreachable (FLAME_HISTORY_URL): {err}"

    def describe(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"redis {where}/{kwargs.get('db', 0)} keys {self.prefix}:*"


class SQLiteStore:
    def __init__(self, path: Path, ttl: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.ttl, self.swept = path, ttl, 0.0
        self.lock = threading.Lock()
        self.db = sqlite3.connect(
            path, timeout=LOCK_WAIT, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS payee (k INTEGER PRIMARY KEY, n INTEGER, seen REAL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS transfer (k INTEGER PRIMARY KEY, seen REAL) WITHOUT ROWID"
        )

    def check_order(self, first_step: int) -> None:
        pass

    def exchange(
        self,
        payees: np.ndarray,
        adds: np.ndarray,
        asked: np.ndarray,
        transfers: np.ndarray,
        last_step: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = payees.view(np.int64).tolist()
        now = time.time()
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")  # waits at most LOCK_WAIT for a replica
            except sqlite3.Error as err:
                raise HistoryUnavailable(f"history store {self.describe()}: {err}") from None
            try:
                since = now - self.ttl
                known = dict(self._select("payee", "k, n", ids, since))
                done = {k for (k,) in self._select("transfer", "k", asked.tolist(), since)}
                self.db.executemany(
                    "INSERT INTO payee VALUES (?, ?, ?) ON CONFLICT(k) DO UPDATE SET n = CASE "
                    "WHEN seen >= ? THEN n + excluded.n ELSE excluded.n END, seen = excluded.seen",
                    [(k, n, now, since) for k, n in zip(ids, adds.tolist(), strict=True)],
                )
                self.db.executemany(
                    "INSERT INTO transfer VALUES (?, ?) ON CONFLICT(k) DO UPDATE "
                    "SET seen = excluded.seen",
                    [(k, now) for k in transfers.tolist()],
                )
                self._sweep(now)
                self.db.execute("COMMIT")
            except sqlite3.Error as err:  # a full disk, a file gone read-only, a corrupt file
                self.db.execute("ROLLBACK")
                raise HistoryUnavailable(f"history store {self.describe()}: {err}") from None
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        prior = np.array([known.get(k, 0) for k in ids], dtype=np.int64)
        return prior, np.array([k in done for k in asked.tolist()], dtype=bool)

    def _select(
        self, table: str, columns: str, keys: list[int], since: float
    ) -> list[tuple[int, ...]]:
        """The unexpired rows of ``table`` with these keys."""
        rows: list[tuple[int, ...]] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {columns} FROM {table} WHERE k IN ({marks}) AND seen >= ?"
            rows += self.db.execute(query, [*chunk, since]).fetchall()
        return rows

    def _sweep(self, now: float) -> None:
        if now - self.swept < SWEEP_EVERY:  # expired rows are never read; this frees their space
            return
        self.swept = now
        for table in ("payee", "transfer"):
            self.db.execute(f"DELETE FROM {table} WHERE seen < ?", (now - self.ttl,))

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def problem(self) -> str:
        return ""  # a file in the scorer's own state folder: errors surface on the request


def open_store(url: str, region: str, state_dir: Path, ttl: int) -> HistoryStore:
    """Redis at ``url`` (redis://, rediss:// or unix://), or SQLite under ``state_dir`` when
    ``url`` is empty; keys named for ``region``. ``memory://`` keeps it in the process only
    (lost on restart, not shared, rows in step order): for benchmarks and tests."""
    if not url:
        return SQLiteStore(state_dir / region / "history.sqlite3", ttl)
    if url == "memory://":
        return MemoryStore()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"FLAME_HISTORY_URL={url!r}: give redis://host:port/db (or empty for SQLite in "
            "FLAME_STATE_DIR)"
        )
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return RedisStore(client, f"flame:{region}", ttl)
