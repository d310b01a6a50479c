"""The feature set: fixed transforms plus history over earlier rows, computed the same way by
every region (and the server) from its own rows.

No statistic is fitted anywhere — not on a region's data and never on the server's test set.
Money is mapped by ``signed_log(x) = sign(x) * log1p(|x|) / 20`` (PaySim amounts stay below
1e9, so values stay within about [-1, 1]).

| feature | definition |
|---|---|
| ``type_<T>`` (5) | one-hot transaction type |
| ``log_amount`` | signed_log(amount) |
| ``dest_is_merchant`` | ``nameDest`` starts with ``M`` |
| ``amount_round_1k`` | amount is a whole multiple of 1,000 |
| ``amount_whole_million`` | amount is a whole multiple of 1,000,000 (and not 0) |
| ``amount_10m`` | amount is exactly 10,000,000: the simulator's largest fraud chunk |
| ``amount_no_cents`` | amount has no cents |
| ``dest_prior_log`` | log1p(earlier rows to this ``nameDest``) / 5: the payee's fan-in so far |
| ``dest_seen`` | an earlier row went to this ``nameDest`` |
| ``cashout_after_transfer`` | CASH_OUT of exactly an earlier TRANSFER's amount, same step |
| ``log_<balance>`` (4) | signed_log of the four balance columns |
| ``error_orig`` | signed_log(newbalanceOrig + amount - oldbalanceOrg) |
| ``error_dest`` | signed_log(oldbalanceDest + amount - newbalanceDest) |
| ``orig_zero`` | oldbalanceOrg = newbalanceOrig = 0 |
| ``dest_zero`` | oldbalanceDest = newbalanceDest = 0 with amount > 0 |
| ``orig_drained`` | oldbalanceOrg > 0 and newbalanceOrig = 0 |

The hour of day is not a feature (version 5). A region's rows cover the hours its files
happen to cover: in the shared real samples the genuine rows come at hour 1 only, or at hours
17-23, while frauds come at every hour, so "a transfer at another hour is fraud" holds on the
training files and is false on a file whose genuine rows span the day. DP-SGD from random
weights learnt that rule first, in every form the hour was given (a one-hot hour, sin/cos on
every row, sin/cos on TRANSFER and CASH_OUT rows only), and without the hour it learns the
type, amount and balance rules that transfer (``benchmarks/results/quality-no-hour.md``).

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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from flame.data.encode import type_codes
from flame.data.history import HISTORY, History
from flame.data.schema import TYPES

if TYPE_CHECKING:
    import pandas as pd

FEATURE_VERSION = 5
LOG_SCALE = 20.0
TEN_MILLION = 10_000_000.0
BALANCES = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
AMOUNT_FLAGS = ("amount_round_1k", "amount_whole_million", "amount_10m", "amount_no_cents")


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x)) / LOG_SCALE


def amounts(x: np.ndarray) -> np.ndarray:
    """Each row's amount, read back from its ``log_amount`` feature (PaySim amounts are >= 0;
    float32 features keep it to about 1e-6 relative)."""
    column = feature_names().index("log_amount")
    return np.expm1(np.abs(x[:, column].astype(np.float64)) * LOG_SCALE)


def feature_names(drop_balances: bool = False) -> list[str]:
    names = [f"type_{t}" for t in TYPES] + ["log_amount"]
    names += ["dest_is_merchant", *AMOUNT_FLAGS]
    names += HISTORY
    if not drop_balances:
        names += [f"log_{b}" for b in BALANCES]
        names += ["error_orig", "error_dest", "orig_zero", "dest_zero", "orig_drained"]
    return names


def merchant(names: pd.Series) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.starts_with(pa.array(names, type=pa.string()), "M").to_numpy(zero_copy_only=False)


def build_features(
    frame: Mapping[str, Any], drop_balances: bool = False, history: History | None = None
) -> np.ndarray:
    """float32 matrix (rows x len(feature_names(drop_balances))) for a validated PaySim frame
    (or the columns ``check_columns`` returns).

    ``history`` carries the history features' state from earlier batches of the same party's
    rows; without it the frame is taken as everything the party holds.
    """
    codes = type_codes(frame["type"])
    amount = np.asarray(frame["amount"], dtype=np.float64)
    columns = [
        np.eye(len(TYPES), dtype=np.float32)[codes],
        np.column_stack(
            [
                signed_log(amount),
                merchant(frame["nameDest"]),
                amount % 1_000 == 0,
                (amount % 1_000_000 == 0) & (amount > 0),
                amount == TEN_MILLION,
                amount % 1 == 0,
            ]
        ),
        (history or History()).features(frame),
    ]
    if not drop_balances:
        old_o, new_o, old_d, new_d = (np.asarray(frame[b], dtype=np.float64) for b in BALANCES)
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
