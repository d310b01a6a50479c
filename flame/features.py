"""The feature set: fixed transforms only, so every region (and the server) transforms identically.

No statistic is fitted anywhere — not on a region's data and never on the server's test set.
Money is mapped by ``signed_log(x) = sign(x) * log1p(|x|) / 20`` (PaySim amounts stay below
1e9, so values stay within about [-1, 1]); hour of day is encoded as sin/cos of ``step % 24``.

| feature | definition |
|---|---|
| ``type_<T>`` (5) | one-hot transaction type |
| ``log_amount`` | signed_log(amount) |
| ``hour_sin``, ``hour_cos`` | hour of day on the unit circle |
| ``dest_is_merchant`` | ``nameDest`` starts with ``M`` |
| ``log_<balance>`` (4) | signed_log of the four balance columns |
| ``error_orig`` | signed_log(newbalanceOrig + amount - oldbalanceOrg) |
| ``error_dest`` | signed_log(oldbalanceDest + amount - newbalanceDest) |
| ``orig_zero`` | oldbalanceOrg = newbalanceOrig = 0 |
| ``dest_zero`` | oldbalanceDest = newbalanceDest = 0 with amount > 0 |
| ``orig_drained`` | oldbalanceOrg > 0 and newbalanceOrig = 0 |

With ``drop_balances`` (the data owner's leakage note: fraudulent transactions are cancelled, so
balance columns should not be used) every feature from ``log_<balance>`` down is left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from flame.schema import TYPES

if TYPE_CHECKING:
    import pandas as pd

FEATURE_VERSION = 1
LOG_SCALE = 20.0
BALANCES = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x)) / LOG_SCALE


def feature_names(drop_balances: bool = False) -> list[str]:
    names = [f"type_{t}" for t in TYPES] + ["log_amount", "hour_sin", "hour_cos"]
    names.append("dest_is_merchant")
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


def build_features(frame: pd.DataFrame, drop_balances: bool = False) -> np.ndarray:
    """float32 matrix (rows x len(feature_names(drop_balances))) for a validated PaySim frame."""
    codes = type_codes(frame["type"])
    amount = frame["amount"].to_numpy(dtype=np.float64)
    angle = 2 * np.pi * (frame["step"].to_numpy() % 24) / 24
    columns = [np.eye(len(TYPES), dtype=np.float32)[codes]]
    columns.append(
        np.column_stack(
            [
                signed_log(amount),
                np.sin(angle),
                np.cos(angle),
                merchant(frame["nameDest"]),
            ]
        )
    )
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
