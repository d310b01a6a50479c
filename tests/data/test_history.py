"""flame/data/history.py: the history columns read earlier rows of the same party only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flame.data.history import HISTORY, History, StepOrderError


def _rows(*rows: tuple[int, str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["step", "type", "nameDest", "amount"])


def test_a_payees_count_and_a_cash_out_after_a_transfer_read_earlier_rows_only() -> None:
    frame = _rows(
        (1, "PAYMENT", "M1", 10.0),
        (1, "TRANSFER", "C9", 500.0),
        (1, "CASH_OUT", "C7", 500.0),  # the same step and amount as an earlier TRANSFER
        (2, "CASH_OUT", "C7", 500.0),  # a later step: no TRANSFER of it in step 2
        (1, "PAYMENT", "M1", 20.0),  # step 1, after row 0 in the file: sees it
    )
    got = pd.DataFrame(History().features(frame), columns=list(HISTORY))
    assert got["dest_seen"].tolist() == [0, 0, 0, 1, 1]
    assert got["dest_prior_log"].tolist() == pytest.approx(
        [0, 0, 0, np.log1p(1) / 5, np.log1p(1) / 5]
    )
    assert got["cashout_after_transfer"].tolist() == [0, 0, 1, 0, 0]


def test_batches_give_the_values_of_the_whole_file_and_must_come_in_step_order() -> None:
    frame = _rows(
        (1, "TRANSFER", "C1", 300.0), (1, "CASH_OUT", "C2", 300.0), (2, "PAYMENT", "C1", 5.0),
        (3, "PAYMENT", "C2", 7.0), (3, "PAYMENT", "C1", 9.0),
    )  # fmt: skip
    whole = History().features(frame)
    history = History()
    parts = [history.features(frame.iloc[a:b]) for a, b in ((0, 1), (1, 3), (3, 5))]
    assert np.array_equal(np.vstack(parts), whole)
    with pytest.raises(StepOrderError, match="step 1 comes after step 3"):
        history.features(frame.iloc[:1])
