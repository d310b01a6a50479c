"""Synthetic PaySim: the Kaggle file's schema and the simulator's behaviour, vectorised.

Follows the checklist in the PaySim reference (§2.4):
- 743 hourly steps; legitimate volume follows an hour-of-day profile (peak 18-20 h, near zero
  3-5 h) and is concentrated in days 0-14, light in days 15-29 and absent from day 30, so late
  steps are fraud only; fraud is spread evenly over all steps (~11 rows/step at full size).
- Type mix 35.2 / 33.8 / 22.0 / 8.4 / 0.65 % (CASH_OUT/PAYMENT/CASH_IN/TRANSFER/DEBIT).
- Legitimate amounts log-normal per type (medians and spreads fitted to the published quartiles;
  heavy right tail, nothing capped).
- Fraud only as chains: a victim's balance is drained by TRANSFERs of at most 1e7 to a fresh mule
  (destination balances 0/0), each followed by the mule's CASH_OUT of the same amount.
- Balance quirks: origin floored at 0 (so ``newbalanceOrig = 0`` while ``amount > oldbalanceOrg``);
  ~32 % of rows have origin 0 -> 0; CASH_IN draws from the counterparty; a destination's
  ``newbalanceDest`` is its balance at the end of the step, shared by all its rows in that step;
  ``M`` names only for PAYMENT, with destination balances 0/0; ``nameOrig`` drawn fresh per row.
- ``isFlaggedFraud``: ~16 per 6.36 M rows, on a late TRANSFER of a large victim's drain that moves
  no money, followed by a 0.0 CASH_OUT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from flame.data.schema import COLUMNS, FRAUD_CHUNK, MAX_STEP, TYPES

TYPE_MIX = {
    "CASH_OUT": 0.352,
    "PAYMENT": 0.338,
    "CASH_IN": 0.220,
    "TRANSFER": 0.084,
    "DEBIT": 0.0065,
}
# (median, log-sd) of legitimate amounts per type
AMOUNT = {
    "CASH_OUT": (150_000.0, 0.85),
    "PAYMENT": (9_500.0, 0.9),
    "CASH_IN": (140_000.0, 0.85),
    "TRANSFER": (480_000.0, 1.05),
    "DEBIT": (3_500.0, 0.9),
}
# share of rows whose origin account starts at 0
ORIGIN_ZERO = {"CASH_OUT": 0.47, "PAYMENT": 0.30, "CASH_IN": 0.15, "TRANSFER": 0.47, "DEBIT": 0.30}
HOUR_PROFILE = np.array(
    [1.5, 0.8, 0.3, 0.04, 0.04, 0.04, 0.3, 1.0, 2.0, 3.0, 4.0, 5.0,
     5.5, 6.0, 6.0, 6.0, 7.0, 9.0, 13.0, 13.0, 13.0, 9.0, 5.0, 3.0]
)  # fmt: skip
FLAGS_PER_FRAUD_ROW = 16 / 8_213  # 16 flagged among 8,213 fraud rows in the Kaggle file


def step_profile() -> np.ndarray:
    """Probability of a legitimate transaction at each step 1..743."""
    steps = np.arange(1, MAX_STEP + 1)
    day, hour = (steps - 1) // 24, steps % 24
    day_weight = np.where(day < 15, 1.0, np.where(day < 30, 0.06, 0.0))
    weights = day_weight * HOUR_PROFILE[hour]
    return weights / weights.sum()


def _names(rng: np.random.Generator, prefix: str, n: int) -> np.ndarray:
    ids = rng.integers(10_000_000, 2_147_483_647, size=n)
    return (prefix + pd.Series(ids).astype(str)).to_numpy(dtype=object)


def _kind(name: str, n: int) -> pd.Categorical:
    return pd.Categorical.from_codes(np.full(n, TYPES.index(name)), categories=TYPES)


def _fraud_chains(rng: np.random.Generator, n_rows: int) -> pd.DataFrame:
    """Victim TRANSFER -> mule CASH_OUT pairs totalling about n_rows rows."""
    if n_rows < 2:
        return pd.DataFrame(columns=[*COLUMNS, "order"])
    balance = np.round(rng.lognormal(np.log(400_000.0), 1.65, size=n_rows), 2)
    chunks = np.ceil(balance / FRAUD_CHUNK).astype(int)
    keep = np.cumsum(chunks) * 2 <= max(n_rows, 2 * chunks[0])
    balance, chunks = balance[keep], chunks[keep]
    victim = np.repeat(np.arange(len(balance)), chunks)
    k = np.arange(len(victim)) - np.repeat(np.cumsum(chunks) - chunks, chunks)  # chunk index
    before = np.round(balance[victim] - k * FRAUD_CHUNK, 2)
    amount = np.minimum(before, FRAUD_CHUNK)
    after = np.round(before - amount, 2)
    step = rng.integers(1, MAX_STEP + 1, size=len(balance))[victim]
    order = rng.random(len(balance))[victim] + k * 1e-6

    # isFlaggedFraud: the last chunk of a few long drains is blocked, moves no money
    flagged = np.zeros(len(victim), dtype=np.int8)
    n_flag = int(rng.poisson(FLAGS_PER_FRAUD_ROW * n_rows))
    last = np.flatnonzero((k == chunks[victim] - 1) & (chunks[victim] >= 3))
    if n_flag and len(last):
        flagged[rng.choice(last, size=min(n_flag, len(last)), replace=False)] = 1
    moved = np.where(flagged == 1, 0.0, amount)
    transfer_after = np.where(flagged == 1, before, after)

    n = len(victim)
    dest_old = np.where(rng.random(n) < 0.3, 0.0, np.round(rng.lognormal(11.5, 1.6, n), 2))
    transfers = pd.DataFrame(
        {
            "step": step, "type": _kind("TRANSFER", n), "amount": amount,
            "nameOrig": _names(rng, "C", n), "oldbalanceOrg": before,
            "newbalanceOrig": transfer_after, "nameDest": _names(rng, "C", n),
            "oldbalanceDest": 0.0, "newbalanceDest": 0.0, "isFraud": 1,
            "isFlaggedFraud": flagged, "order": order,
        }
    )  # fmt: skip
    cashouts = pd.DataFrame(
        {
            "step": step, "type": _kind("CASH_OUT", n), "amount": moved,
            "nameOrig": _names(rng, "C", n), "oldbalanceOrg": moved, "newbalanceOrig": 0.0,
            "nameDest": _names(rng, "C", n), "oldbalanceDest": dest_old,
            "newbalanceDest": np.round(dest_old + moved, 2), "isFraud": 1, "isFlaggedFraud": 0,
            "order": order + 5e-7,
        }
    )  # fmt: skip
    return pd.concat([transfers, cashouts], ignore_index=True)


def _legit(rng: np.random.Generator, n: int) -> pd.DataFrame:
    mix = np.array([TYPE_MIX[t] for t in TYPES])
    idx = rng.choice(len(TYPES), size=n, p=mix / mix.sum())
    kind = pd.Categorical.from_codes(idx, categories=TYPES)
    step = rng.choice(np.arange(1, MAX_STEP + 1), size=n, p=step_profile())
    median = np.array([AMOUNT[t][0] for t in TYPES])
    sigma = np.array([AMOUNT[t][1] for t in TYPES])
    amount = np.round(np.exp(np.log(median[idx]) + sigma[idx] * rng.standard_normal(n)), 2)
    amount = np.maximum(amount, 0.01)

    p_zero = np.array([ORIGIN_ZERO[t] for t in TYPES])[idx]
    orig_old = np.where(
        rng.random(n) < p_zero, 0.0, np.round(rng.lognormal(np.log(25_000.0), 2.0, n), 2)
    )
    cash_in = idx == TYPES.index("CASH_IN")
    orig_new = np.where(cash_in, orig_old + amount, np.maximum(orig_old - amount, 0.0))

    merchant = idx == TYPES.index("PAYMENT")
    order = rng.random(n)
    dest_old, dest_new, dest_id = _destinations(
        rng, step, order, np.where(cash_in, -amount, amount)
    )
    customer_dest = ("C" + pd.Series(dest_id + 100_000_000).astype(str)).to_numpy()
    return pd.DataFrame(
        {
            "step": step, "type": kind, "amount": amount, "nameOrig": _names(rng, "C", n),
            "oldbalanceOrg": orig_old, "newbalanceOrig": np.round(orig_new, 2),
            "nameDest": np.where(merchant, _names(rng, "M", n), customer_dest),
            "oldbalanceDest": np.where(merchant, 0.0, dest_old),
            "newbalanceDest": np.where(merchant, 0.0, dest_new),
            "isFraud": 0, "isFlaggedFraud": 0, "order": order,
        }
    )  # fmt: skip


def _destinations(
    rng: np.random.Generator, step: np.ndarray, order: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Destination balances: running ``old`` per row, end-of-step ``new`` shared per account.

    Destination customers come from a pool about a quarter of the row count, so busy accounts
    appear on several rows of a step, all showing the same end-of-step ``newbalanceDest``.
    """
    n = len(step)
    pool = max(4, n // 4)
    dest_id = rng.integers(0, pool, size=n)
    codes, uniques = pd.factorize(step.astype(np.int64) * pool + dest_id)
    start = np.round(rng.lognormal(12.0, 1.7, len(uniques)), 2)
    start[rng.random(len(uniques)) < 0.0006] = 0.0
    by_time = np.lexsort((order, step))
    running = np.empty(n)
    running[by_time] = (
        pd.Series(delta[by_time]).groupby(codes[by_time]).cumsum().to_numpy() - delta[by_time]
    )
    total = np.bincount(codes, weights=delta, minlength=len(uniques))
    old = np.round(np.maximum(start[codes] + running, 0.0), 2)
    new = np.round(np.maximum(start[codes] + total[codes], 0.0), 2)
    return old, new, dest_id


def generate(rows: int, seed: int = 42, fraud_rate: float = 0.00129) -> pd.DataFrame:
    """``rows`` synthetic PaySim rows (the exact count), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    with tqdm(total=3, desc=f"synthetic PaySim ({rows:,} rows)", unit="stage") as bar:
        fraud = _fraud_chains(rng, round(rows * fraud_rate))
        bar.update()
        legit = _legit(rng, rows - len(fraud))
        bar.update()
        both = pd.concat([legit, fraud], ignore_index=True)
        both = both.sort_values(["step", "order"], kind="stable", ignore_index=True)
        both["type"] = both["type"].astype(pd.CategoricalDtype(TYPES))
        both["step"] = both["step"].astype("int32")
        for label in ("isFraud", "isFlaggedFraud"):
            both[label] = both[label].astype("int8")
        bar.update()
    return both[list(COLUMNS)]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write PaySim rows as CSV with the Kaggle header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.astype({"type": "string"}), preserve_index=False)
    with path.open("wb") as sink:
        sink.write((",".join(COLUMNS) + "\n").encode())
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
