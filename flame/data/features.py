"""The feature set: fixed transforms plus history over earlier rows, computed the same way by
every region (and the server) from its own rows.

No statistic is fitted anywhere — not on a region's data and never on the server's test set.
Money is mapped by ``signed_log(x) = sign(x) * log1p(|x|) / 20`` (PaySim amounts stay below
1e9, so values stay within about [-1, 1]); hour of day is ``step % 24``.

| feature | definition |
|---|---|
| ``type_<T>`` (5) | one-hot transaction type |
| ``log_amount`` | signed_log(amount) |
| ``hour_sin``, ``hour_cos`` | hour of day on the unit circle |
| ``dest_is_merchant`` | ``nameDest`` starts with ``M`` |
| ``amount_round_1k`` | amount is a whole multiple of 1,000 |
| ``amount_whole_million`` | amount is a whole multiple of 1,000,000 (and not 0) |
| ``amount_10m`` | amount is exactly 10,000,000: the simulator's largest fraud chunk |
| ``amount_no_cents`` | amount has no cents |
| ``risky_hour_<h>`` (24) | hour h one-hot, on TRANSFER and CASH_OUT rows only (type x hour) |
| ``dest_prior_log`` | log1p(earlier rows to this ``nameDest``) / 5: the payee's fan-in so far |
| ``dest_seen`` | an earlier row went to this ``nameDest`` |
| ``cashout_after_transfer`` | CASH_OUT of exactly an earlier TRANSFER's amount, same step |
| ``log_<balance>`` (4) | signed_log of the four balance columns |
| ``error_orig`` | signed_log(newbalanceOrig + amount - oldbalanceOrg) |
| ``error_dest`` | signed_log(oldbalanceDest + amount - newbalanceDest) |
| ``orig_zero`` | oldbalanceOrg = newbalanceOrig = 0 |
| ``dest_zero`` | oldbalanceDest = newbalanceDest = 0 with amount > 0 |
| ``orig_drained`` | oldbalanceOrg > 0 and newbalanceOrig = 0 |

**History features** (``dest_*``, ``cashout_after_transfer``) read only earlier rows: rows of an
earlier step, or of the same step earlier in the file (a file need not be sorted: rows are
ordered by step, stably, before counting). They are computed over the rows a party holds — a
region over its own rows, the server over its test rows, ``flame score`` over the scored file
— carrying their state from batch to batch (``History``), so a streamed file gives the same
values as the whole file. On a sampled file (few rows of each account) they are mostly 0, which
the model sees in training too (the shared samples are sampled files).

With ``drop_balances`` (the data owner's leakage note: fraudulent transactions are cancelled, so
balance columns should not be used) every feature from ``log_<balance>`` down is left out: they
are the last columns, so the cached arrays serve both feature sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flame.data.schema import TYPES

if TYPE_CHECKING:
    import pandas as pd

FEATURE_VERSION = 2
LOG_SCALE = 20.0
COUNT_SCALE = 5.0
TEN_MILLION = 10_000_000.0
BALANCES = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
AMOUNT_FLAGS = ("amount_round_1k", "amount_whole_million", "amount_10m", "amount_no_cents")
HISTORY = ("dest_prior_log", "dest_seen", "cashout_after_transfer")
RISKY = ("TRANSFER", "CASH_OUT")


class StepOrderError(ValueError):
    """Streamed rows went back in time across batches, so history would read later rows."""


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x)) / LOG_SCALE


def amounts(x: np.ndarray) -> np.ndarray:
    """Each row's amount, read back from its ``log_amount`` feature (PaySim amounts are >= 0;
    float32 features keep it to about 1e-6 relative)."""
    column = feature_names().index("log_amount")
    return np.expm1(np.abs(x[:, column].astype(np.float64)) * LOG_SCALE)


def feature_names(drop_balances: bool = False) -> list[str]:
    names = [f"type_{t}" for t in TYPES] + ["log_amount", "hour_sin", "hour_cos"]
    names += ["dest_is_merchant", *AMOUNT_FLAGS]
    names += [f"risky_hour_{h}" for h in range(24)]
    names += HISTORY
    if not drop_balances:
        names += [f"log_{b}" for b in BALANCES]
        names += ["error_orig", "error_dest", "orig_zero", "dest_zero", "orig_drained"]
    return names


def type_codes(kinds: pd.Series) -> np.ndarray:
    """Index of each row's type in TYPES (-1 if unknown)."""
    import pandas as pd  # here, so feature_names() stays importable without pandas/pyarrow
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(kinds.dtype, pd.CategoricalDtype):
        return kinds.cat.set_categories(TYPES).cat.codes.to_numpy(dtype=np.int64)
    codes = pc.index_in(pa.array(kinds, type=pa.string()), value_set=pa.array(TYPES))
    return pc.fill_null(codes, -1).to_numpy().astype(np.int64)


def merchant(names: pd.Series) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.starts_with(pa.array(names, type=pa.string()), "M").to_numpy(zero_copy_only=False)


class History:
    """What a party has seen so far: rows per destination, and the TRANSFER amounts of the
    latest step (for ``cashout_after_transfer``). Memory: 16 bytes per distinct destination."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint64)  # sorted destination hashes
        self.counts = np.zeros(0, dtype=np.int64)
        self.last_step = -1
        self.transfers = np.zeros(0, dtype=np.int64)  # (step, cents) keys of last_step

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """The history columns of ``frame``'s rows (in frame order); then remembers them."""
        import pandas as pd

        from flame.data.partition import name_hash

        steps = frame["step"].to_numpy(dtype=np.int64)
        if len(steps) and steps.min() < self.last_step:
            raise StepOrderError(
                f"rows are not in step order: step {steps.min()} comes after step "
                f"{self.last_step} in an earlier block; sort the file by step"
            )
        order = np.argsort(steps, kind="stable")
        dest = name_hash(frame["nameDest"], 0)[order]
        within = pd.Series(dest).groupby(dest, sort=False).cumcount().to_numpy()
        prior = within + self._count(dest)
        codes = type_codes(frame["type"])[order]
        cents = np.round(frame["amount"].to_numpy(dtype=np.float64)[order] * 100).astype(np.int64)
        key = steps[order] * np.int64(10**13) + cents
        is_transfer = codes == TYPES.index("TRANSFER")
        earlier = pd.Series(is_transfer.astype(np.int64)).groupby(key).cumsum().to_numpy()
        earlier = earlier - is_transfer + np.isin(key, self.transfers)
        paired = (codes == TYPES.index("CASH_OUT")) & (earlier > 0)
        out = np.empty((len(frame), len(HISTORY)), dtype=np.float32)
        out[order] = np.column_stack([np.log1p(prior) / COUNT_SCALE, prior > 0, paired])
        self._remember(dest, steps[order], key[is_transfer], steps[order][is_transfer])
        return out

    def _count(self, dest: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.keys, dest), max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(len(dest), dtype=np.int64)
        return np.where(self.keys[at] == dest, self.counts[at], 0)

    def _remember(
        self, dest: np.ndarray, steps: np.ndarray, transfers: np.ndarray, t_steps: np.ndarray
    ) -> None:
        keys, inverse = np.unique(np.concatenate([self.keys, dest]), return_inverse=True)
        weights = np.concatenate([self.counts, np.ones(len(dest), dtype=np.int64)])
        self.keys, self.counts = keys, np.bincount(inverse, weights=weights).astype(np.int64)
        if len(steps):
            last = int(steps[-1])
            kept = self.transfers if last == self.last_step else self.transfers[:0]
            self.transfers = np.concatenate([kept, transfers[t_steps == last]])
            self.last_step = last


def build_features(
    frame: pd.DataFrame, drop_balances: bool = False, history: History | None = None
) -> np.ndarray:
    """float32 matrix (rows x len(feature_names(drop_balances))) for a validated PaySim frame.

    ``history`` carries the history features' state from earlier batches of the same party's
    rows; without it the frame is taken as everything the party holds.
    """
    codes = type_codes(frame["type"])
    amount = frame["amount"].to_numpy(dtype=np.float64)
    hour = frame["step"].to_numpy() % 24
    angle = 2 * np.pi * hour / 24
    risky = np.isin(codes, [TYPES.index(t) for t in RISKY])
    columns = [
        np.eye(len(TYPES), dtype=np.float32)[codes],
        np.column_stack(
            [
                signed_log(amount),
                np.sin(angle),
                np.cos(angle),
                merchant(frame["nameDest"]),
                amount % 1_000 == 0,
                (amount % 1_000_000 == 0) & (amount > 0),
                amount == TEN_MILLION,
                amount % 1 == 0,
            ]
        ),
        np.eye(24, dtype=np.float32)[hour] * risky[:, None],
        (history or History()).features(frame),
    ]
    if not drop_balances:
        old_o, new_o, old_d, new_d = (frame[b].to_numpy(dtype=np.float64) for b in BALANCES)
        columns.append(
            np.column_stack(
                [
                    *(signed_log(b) for b in (old_o, new_o, old_d, new_d)),
                    signed_log(new_o + amount - old_o),
                    signed_log(old_d + amount - new_d),
                    (old_o == 0) & (new_o == 0),
                    (old_d == 0) & (new_d == 0) & (amount > 0),
                    (old_o > 0) & (new_o == 0),
                ]
            )
        )
    return np.hstack(columns).astype(np.float32)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["isFraud"].to_numpy(dtype=np.float32)
