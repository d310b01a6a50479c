"""flame/fl/ledger.py: a region's releases, kept across processes, never under-counted."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from flame.fl.ledger import TRAIN, Ledger, Release, ledgers


def _release(run: str, rnd: int, epsilon: float) -> Release:
    return Release(run, "fab", rnd, TRAIN, 1.1, 0.2, 100, 1e-5, epsilon)


def test_releases_outlive_the_process_and_are_numbered_once(tmp_path: Path) -> None:
    with Ledger(tmp_path / "us") as ledger, ledger.charging() as charge:
        first = charge.add(_release("run-1", 1, 0.5))
    with Ledger(tmp_path / "us") as ledger:  # a later task: a new connection
        with ledger.charging() as charge:
            assert [r.epsilon for r in charge.spent] == [0.5]
            second = charge.add(_release("run-2", 1, 0.3))
        assert second > first
        assert [r.run_id for r in ledger.releases()] == ["run-1", "run-2"]
        assert [r.round for r in ledger.releases("run-2")] == [1]
        assert ledger.releases()[0].at  # charged at a recorded time
    assert ledgers(tmp_path) == {"us": tmp_path / "us"}
    assert ledgers(tmp_path / "missing") == {}


def test_a_charge_whose_check_fails_leaves_no_release(tmp_path: Path) -> None:
    with Ledger(tmp_path / "eu") as ledger:
        with pytest.raises(RuntimeError), ledger.charging() as charge:
            charge.add(_release("run-1", 1, 2.0))
            raise RuntimeError("over the lifetime budget")
        assert ledger.releases() == []


def _charge_one(folder: Path, run: str) -> None:
    with Ledger(folder) as ledger, ledger.charging() as charge:
        charge.add(_release(run, len(charge.spent) + 1, 0.1))


def test_tasks_charging_at_once_each_see_what_the_others_spent(tmp_path: Path) -> None:
    """Two processes at once: each reads what is spent and adds inside one write transaction,
    so the rounds they record (what each saw spent, plus one) are 1..n without a repeat."""
    context = multiprocessing.get_context("spawn")
    tasks = [context.Process(target=_charge_one, args=(tmp_path, f"r{i}")) for i in range(6)]
    for task in tasks:
        task.start()
    for task in tasks:
        task.join(60)
        assert task.exitcode == 0
    with Ledger(tmp_path) as ledger:
        assert sorted(r.round for r in ledger.releases()) == [1, 2, 3, 4, 5, 6]
