"""A scorer's history stores (a real redis-server, SQLite) give the features of the whole file,
one row at a time, across restarts and shared by replicas; and forget what is older than the
TTL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from flame.data.features import HISTORY, build_features, feature_names
from flame.data.history import History, HistoryStore
from flame.data.synth import generate
from flame.ops.history_store import HistoryUnavailable, RedisStore, SQLiteStore, open_store
from tests.conftest import RedisServer

DAY = 24 * 3600


def _rows(n: int = 1_500) -> pd.DataFrame:
    """Synthetic rows in step order, with repeated payees and TRANSFER -> CASH_OUT pairs."""
    frame = generate(n, seed=11, fraud_rate=0.05)
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def _history(x: np.ndarray) -> np.ndarray:
    names = feature_names(True)
    return x[:, [names.index(h) for h in HISTORY]]


def _stream(frame: pd.DataFrame, stores: list[HistoryStore], sizes: list[int]) -> np.ndarray:
    """``frame`` in batches of ``sizes`` (cycled), each batch through the next of ``stores``."""
    histories = [History(s) for s in stores]
    out, start, i = [], 0, 0
    while start < len(frame):
        size = sizes[i % len(sizes)]
        batch = frame.iloc[start : start + size]
        out.append(histories[i % len(histories)].features(batch))
        start, i = start + size, i + 1
    return np.vstack(out)


def test_the_rows_have_history_to_get_right() -> None:
    whole = _history(build_features(_rows(), drop_balances=True))
    assert whole[:, 1].sum() > 100 and whole[:, 2].sum() > 5  # payees seen again, pairs


def test_redis_one_row_at_a_time_equals_the_whole_file(redis_server: RedisServer) -> None:
    frame = _rows()
    whole = _history(build_features(frame, drop_balances=True))
    store = open_store(redis_server.url, "us", Path("unused"), DAY)
    assert np.array_equal(_stream(frame, [store], [1]), whole)
    other = open_store(redis_server.url, "eu", Path("unused"), DAY)  # a region of its own
    assert np.array_equal(_stream(frame.iloc[:200], [other], [7]), whole[:200])


def test_redis_history_survives_a_restart_and_is_shared_by_replicas(tmp_path: Path) -> None:
    frame = _rows()
    whole = _history(build_features(frame, drop_balances=True))
    server = RedisServer(tmp_path / "redis").start()
    try:
        a, b = (RedisStore(redis.Redis.from_url(server.url), "flame:us", DAY) for _ in "ab")
        first = _stream(frame.iloc[:700], [a, b], [1, 3, 1, 50])  # two replicas, alternating
        server.stop()
        with pytest.raises(HistoryUnavailable, match=r"history store redis 127\.0\.0\.1"):
            History(a).features(frame.iloc[700:701])
        server.start()  # the same append-only file
        rest = _stream(frame.iloc[700:], [b], [1])
    finally:
        server.stop()
    assert np.array_equal(np.vstack([first, rest]), whole)


def test_replicas_racing_on_one_payee_never_see_the_same_count(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    row = _rows().iloc[[0]].assign(nameDest="C42", type="PAYMENT")
    stores = {
        "redis": lambda: open_store(redis_server.url, "us", tmp_path, DAY),
        "sqlite": lambda: open_store("", "us", tmp_path / "state", DAY),
    }
    for kind, make in stores.items():
        seen: list[float] = []

        def work(store: HistoryStore, seen: list[float] = seen) -> None:
            history = History(store)
            for _ in range(150):
                seen.append(float(history.features(row)[0, 0]))

        threads = [threading.Thread(target=work, args=(make(),)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        priors = np.rint(np.expm1(np.array(seen) * 5)).astype(int)
        assert sorted(priors) == list(range(450)), kind


def test_sqlite_keeps_history_across_restarts(tmp_path: Path) -> None:
    frame = _rows()
    whole = _history(build_features(frame, drop_balances=True))
    first = _stream(frame.iloc[:500], [open_store("", "eu", tmp_path, DAY)], [1, 9])
    again = open_store("", "eu", tmp_path, DAY)  # a new process on the same file
    assert again.describe() == f"sqlite {tmp_path / 'eu' / 'history.sqlite3'}"
    rest = _stream(frame.iloc[500:], [again, open_store("", "eu", tmp_path, DAY)], [1, 2])
    assert np.array_equal(np.vstack([first, rest]), whole)


def test_a_payee_unseen_for_the_ttl_is_forgotten(redis_server: RedisServer, tmp_path: Path) -> None:
    row = _rows().iloc[[0]].assign(nameDest="C7", type="PAYMENT")
    stores = [
        open_store(redis_server.url, "us", tmp_path, 1),
        SQLiteStore(tmp_path / "h.sqlite3", 1),
    ]
    for store in stores:
        history = History(store)

        def priors(history: History = history) -> list[int]:
            return [int(np.rint(np.expm1(history.features(row)[0, 0] * 5))) for _ in range(2)]

        assert priors() == [0, 1]
        time.sleep(2.1)
        assert priors() == [0, 1], store.describe()  # counting again from nothing


def test_bad_store_settings_say_which_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FLAME_HISTORY_URL='http://x'"):
        open_store("http://x", "us", tmp_path, DAY)


def test_a_sqlite_store_held_by_another_process_answers_unavailable_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica (here a raw connection) holds the write lock: the exchange gives up after
    LOCK_WAIT with a line naming the file, and rolls nothing half-way; later it works."""
    import sqlite3

    import flame.ops.history_store as history_store

    monkeypatch.setattr(history_store, "LOCK_WAIT", 0.2)
    path = tmp_path / "us" / "history.sqlite3"
    store = SQLiteStore(path, DAY)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    frame = _rows(50)
    started = time.monotonic()
    with pytest.raises(
        HistoryUnavailable, match=rf"history store sqlite {path}: database is locked"
    ):
        History(store).features(frame)
    assert time.monotonic() - started < 5
    holder.execute("ROLLBACK")
    whole = _history(build_features(frame, True))
    assert np.array_equal(History(store).features(frame), whole)  # nothing was half-counted


def test_a_redis_store_that_never_answers_says_so_in_seconds() -> None:
    """Redis accepts connections and never answers: an exchange ends within the 2 s socket
    timeout, naming the address and FLAME_HISTORY_URL, and is not retried (a lost reply would
    count twice); problem() says the same."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        store = open_store(url, "us", Path("unused"), DAY)
        started = time.monotonic()
        with pytest.raises(HistoryUnavailable, match=r"127\.0\.0\.1:\d+/0 .*FLAME_HISTORY_URL"):
            History(store).features(_rows(20))
        assert time.monotonic() - started < 5
        assert "unreachable (FLAME_HISTORY_URL)" in store.problem()
    finally:
        silent.close()
