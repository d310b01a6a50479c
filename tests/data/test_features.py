from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flame.data.features import HISTORY, build_features, feature_names
from flame.data.history import History, StepOrderError
from flame.data.synth import generate


def test_shapes_names_and_drop_balances() -> None:
    frame = generate(2_000, seed=1)
    full = build_features(frame)
    dropped = build_features(frame, drop_balances=True)
    assert full.dtype == np.float32 and full.shape == (2_000, len(feature_names()))
    assert dropped.shape == (2_000, len(feature_names(True)))
    assert not any("balance" in n or "error" in n for n in feature_names(True))
    assert np.isfinite(full).all() and np.abs(full).max() <= 1.0 + 1e-6


ROW_WISE = [i for i, n in enumerate(feature_names()) if n not in HISTORY]
HIST = [feature_names().index(n) for n in HISTORY]


def test_row_transforms_are_fixed_not_fitted() -> None:
    """A row's non-history features do not depend on which other rows come with it."""
    frame = generate(3_000, seed=2, fraud_rate=0.02)
    whole = build_features(frame)
    alone = np.vstack([build_features(frame.iloc[[i]]) for i in (0, 10, 2_999)])
    assert np.array_equal(whole[[0, 10, 2_999]][:, ROW_WISE], alone[:, ROW_WISE])
    assert np.array_equal(alone[:, HIST], np.zeros((3, len(HIST))))  # nothing seen before


def test_no_feature_reads_a_later_row() -> None:
    frame = generate(6_000, seed=4, fraud_rate=0.02)
    whole = build_features(frame)
    for k in (1, 700, 3_001):
        assert np.array_equal(build_features(frame.iloc[:k]), whole[:k])
    later = frame.copy()  # rewrite every row after k: rows up to k must not change
    k = 2_500
    later.loc[k:, "nameDest"] = later.loc[k:, "nameDest"].iloc[::-1].to_numpy()
    later.loc[k:, "amount"] = later.loc[:, "amount"].iloc[: len(later) - k].to_numpy()
    assert np.array_equal(build_features(later)[:k], whole[:k])


def test_history_orders_rows_by_step_and_streams_like_the_whole_file() -> None:
    frame = generate(6_000, seed=5, fraud_rate=0.02)
    whole = build_features(frame)
    # later steps first in the file, each step's rows in their order: the same history
    by_step_desc = np.lexsort((np.arange(len(frame)), -frame["step"].to_numpy()))
    assert np.array_equal(build_features(frame.iloc[by_step_desc]), whole[by_step_desc])
    history = History()  # batches carry the state
    streamed = [
        build_features(frame.iloc[i : i + 997], history=history) for i in range(0, 6_000, 997)
    ]
    assert np.array_equal(np.vstack(streamed), whole)
    with pytest.raises(StepOrderError, match="not in step order"):
        build_features(frame.iloc[:100], history=history)  # back in time after the last batch


def test_history_features_mean_what_they_say() -> None:
    rows = pd.DataFrame(
        {
            "step": [1, 1, 1, 1, 2, 2],
            "type": ["TRANSFER", "CASH_OUT", "PAYMENT", "CASH_OUT", "CASH_OUT", "TRANSFER"],
            "amount": [500.0, 500.0, 9.5, 77.0, 500.0, 77.0],
            "nameOrig": ["C1", "C2", "C3", "C4", "C5", "C6"],
            "nameDest": ["C9", "C8", "M1", "C9", "C9", "C7"],
        }
    )
    x = build_features(rows, drop_balances=True)
    names = feature_names(True)
    seen, prior, paired = (
        x[:, names.index(n)] for n in ("dest_seen", "dest_prior_log", "cashout_after_transfer")
    )
    assert seen.tolist() == [0, 0, 0, 1, 1, 0]
    assert np.allclose(prior[[3, 4]], np.log1p([1, 2]) / 5)
    # the CASH_OUT of step 1 pairs with that step's earlier TRANSFER of 500; not in step 2, and
    # a CASH_OUT before its TRANSFER (77.0) does not
    assert paired.tolist() == [0, 1, 0, 0, 0, 0]


def test_error_features_separate_fraud_transfers() -> None:
    frame = generate(50_000, seed=3, fraud_rate=0.01)
    x = build_features(frame)
    names = feature_names()
    dest_zero = x[:, names.index("dest_zero")]
    fraud_transfer = ((frame["isFraud"] == 1) & (frame["type"] == "TRANSFER")).to_numpy()
    assert dest_zero[fraud_transfer].mean() == 1.0
    assert (
        dest_zero[frame["type"].isin(["TRANSFER", "CASH_OUT"]).to_numpy() & ~fraud_transfer].mean()
        < 0.01
    )


def test_no_feature_moves_with_the_hour_of_day() -> None:
    """The hour of day is not a feature (version 5): the same row at any hour of the same day
    gives the same features, whatever its type."""
    frame = generate(3_000, seed=6)
    for kind in ("CASH_IN", "PAYMENT", "DEBIT", "TRANSFER", "CASH_OUT"):
        row = frame[frame["type"] == kind].iloc[[0]]
        by_hour = np.vstack([build_features(row.assign(step=h)) for h in range(1, 25)])
        assert np.ptp(by_hour, axis=0).max() == 0, kind
    assert not [n for n in feature_names() if "hour" in n]
