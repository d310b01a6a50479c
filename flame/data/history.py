"""The history features' state: what a party has seen of its own transactions so far.

One piece of code (``History``) computes ``dest_prior_log``, ``dest_seen`` and
``cashout_after_transfer`` for training, ``flame score`` and the scorer, so a scorer fed one
transaction per request in step order gives the same features as ``flame score`` on the whole
file. Where the state lives is a ``HistoryStore``: ``MemoryStore`` in a process (a file, a
region's training rows), Redis or SQLite for a scorer (``flame.ops.history_store``).

A store answers one question per batch, atomically (two scorer replicas may share a store):
how many earlier rows went to each payee, and which (step, amount) keys were earlier TRANSFERs;
then it remembers the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from flame.data.encode import name_hash, type_codes
from flame.data.schema import TYPES

if TYPE_CHECKING:
    from collections.abc import Mapping

HISTORY = ("dest_prior_log", "dest_seen", "cashout_after_transfer")
COUNT_SCALE = 5.0
STEP_KEY = np.int64(10**13)  # a transfer's key: step * STEP_KEY + amount in cents (the
# loader's MAX_AMOUNT and MAX_STEP_INDEX keep keys distinct and within an int64)


class StepOrderError(ValueError):
    """Streamed rows went back in time across batches, so history would read later rows."""


class HistoryStore(Protocol):
    def exchange(
        self,
        payees: np.ndarray,
        adds: np.ndarray,
        asked: np.ndarray,
        transfers: np.ndarray,
        last_step: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Atomically: the earlier row counts of ``payees`` (distinct uint64 hashes, sorted)
        and whether each ``asked`` transfer key was an earlier TRANSFER; then add ``adds`` rows
        to each payee and remember the ``transfers`` keys (the batch's rows end at
        ``last_step``)."""
        ...

    def check_order(self, first_step: int) -> None:
        """Raise StepOrderError if this store cannot take a batch starting at ``first_step``."""
        ...

    def describe(self) -> str: ...

    def problem(self) -> str:
        """Why the store cannot be used now (one line), or "" when it answers."""
        ...


class MemoryStore:
    """In a process: sorted payee hashes with counts (16 bytes per payee), and the TRANSFER keys
    of the latest step only, so batches must come in step order."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.last_step = -1
        self.transfers = np.zeros(0, dtype=np.int64)

    def describe(self) -> str:
        return f"memory ({len(self.keys)} payees)"

    def problem(self) -> str:
        return ""

    def check_order(self, first_step: int) -> None:
        if first_step < self.last_step:
            raise StepOrderError(
                f"rows are not in step order: step {first_step} comes after step "
                f"{self.last_step} in an earlier block; sort the file by step"
            )

    def exchange(
        self,
        payees: np.ndarray,
        adds: np.ndarray,
        asked: np.ndarray,
        transfers: np.ndarray,
        last_step: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        at = np.searchsorted(self.keys, payees)  # payees come sorted (np.unique's)
        known = at < len(self.keys)
        known[known] = self.keys[at[known]] == payees[known]
        prior = np.zeros(len(payees), dtype=np.int64)
        prior[known] = self.counts[at[known]]
        seen = np.isin(asked, self.transfers)
        self.counts[at[known]] += adds[known]  # merged in place: no re-sort of every payee
        self.keys = np.insert(self.keys, at[~known], payees[~known])
        self.counts = np.insert(self.counts, at[~known], adds[~known])
        kept = self.transfers if last_step == self.last_step else self.transfers[:0]
        self.transfers = np.concatenate([kept, transfers[transfers // STEP_KEY == last_step]])
        self.last_step = max(self.last_step, last_step)
        return prior, seen


class History:
    """The history columns of a party's rows, batch after batch, over ``store``."""

    def __init__(self, store: HistoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()

    def features(self, frame: Mapping[str, Any]) -> np.ndarray:
        """The history columns of ``frame``'s rows (in frame order); then remembers them.

        Rows are taken in step order (stably): a row sees the rows of earlier steps and the
        rows of its own step before it.
        """
        keys = (dest_hash(frame["nameDest"]), type_codes(frame["type"]), frame["amount"])
        return self.of_keys(frame["step"], *keys)

    def of_keys(self, steps: Any, payees: np.ndarray, codes: np.ndarray, amount: Any) -> np.ndarray:
        """``features`` of rows given by what history reads of them: step, payee hash
        (``dest_hash``), type code and amount (what ``flame score`` keeps of an unsorted file)."""
        steps = np.asarray(steps, dtype=np.int64)
        if not len(steps):
            return np.zeros((0, len(HISTORY)), dtype=np.float32)
        self.store.check_order(int(steps.min()))
        order = np.argsort(steps, kind="stable")
        dest = payees[order]
        payees, inverse, adds = np.unique(dest, return_inverse=True, return_counts=True)
        codes = codes[order]
        amount = np.asarray(amount, dtype=np.float64)[order]
        cents = np.round(amount * 100).astype(np.int64)
        key = steps[order] * STEP_KEY + cents
        is_transfer = codes == TYPES.index("TRANSFER")
        is_cashout = codes == TYPES.index("CASH_OUT")
        asked = np.unique(key[is_cashout])
        stored, seen = self.store.exchange(
            payees, adds, asked, np.unique(key[is_transfer]), int(steps.max())
        )
        within = _running(dest, np.ones(len(dest), dtype=np.int64)) - 1
        prior = within + stored[inverse]
        earlier = _running(key, is_transfer.astype(np.int64))
        was_transfer = np.zeros(len(key), dtype=bool)
        was_transfer[is_cashout] = seen[np.searchsorted(asked, key[is_cashout])]
        paired = is_cashout & (((earlier - is_transfer) > 0) | was_transfer)
        out = np.empty((len(steps), len(HISTORY)), dtype=np.float32)
        out[order] = np.column_stack([np.log1p(prior) / COUNT_SCALE, prior > 0, paired])
        return out


def dest_hash(names: Any) -> np.ndarray:
    """The payee key of each ``nameDest`` (as ``History`` hashes them)."""
    return name_hash(names, 0)


def _running(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The running sum of ``values`` within each group, in row order (inclusive)."""
    order = np.argsort(groups, kind="stable")
    total = np.cumsum(values[order])
    starts = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1]])
    before = np.repeat(total[starts] - values[order][starts], np.diff(np.r_[starts, len(order)]))
    out = np.empty_like(total)
    out[order] = total - before
    return out
