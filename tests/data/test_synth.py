from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flame.data.loader import read_paysim
from flame.data.schema import COLUMNS, FRAUD_CHUNK
from flame.data.synth import generate, step_profile, write_csv

ROWS = 400_000


@pytest.fixture(scope="module")
def synth() -> pd.DataFrame:
    return generate(ROWS, seed=7)


def test_schema_exact_rows_and_determinism(synth: pd.DataFrame) -> None:
    assert list(synth.columns) == list(COLUMNS)
    assert len(synth) == ROWS
    again = generate(20_000, seed=3)
    pd.testing.assert_frame_equal(again, generate(20_000, seed=3))
    assert not again.equals(generate(20_000, seed=4))


def test_type_mix_and_fraud_rate_match_kaggle(synth: pd.DataFrame) -> None:
    mix = synth["type"].value_counts(normalize=True)
    expected = {"CASH_OUT": 0.3517, "PAYMENT": 0.3381, "CASH_IN": 0.2199, "TRANSFER": 0.0838}
    for kind, share in expected.items():
        assert abs(mix[kind] - share) < 0.01, kind
    assert abs(mix["DEBIT"] - 0.0065) < 0.002
    assert abs(synth["isFraud"].mean() - 0.00129) < 0.0002


def test_fraud_only_as_drained_transfer_cashout_chains(synth: pd.DataFrame) -> None:
    fraud = synth[synth["isFraud"] == 1]
    assert set(fraud["type"].astype(str)) == {"TRANSFER", "CASH_OUT"}
    transfers = fraud[fraud["type"] == "TRANSFER"]
    assert (transfers[["oldbalanceDest", "newbalanceDest"]] == 0).all().all()
    assert fraud["amount"].max() <= FRAUD_CHUNK
    assert (fraud["amount"] == FRAUD_CHUNK).any()  # large victims drained in 1e7 chunks
    assert (fraud["type"] == "TRANSFER").sum() == (fraud["type"] == "CASH_OUT").sum()
    # a fraud TRANSFER is immediately followed by the mule's CASH_OUT of the same amount
    idx = transfers.index.to_numpy()
    nxt = synth.loc[idx + 1]
    assert (nxt["type"].astype(str).to_numpy() == "CASH_OUT").all()
    moved = transfers["isFlaggedFraud"].to_numpy() == 0
    assert np.allclose(nxt["amount"].to_numpy()[moved], transfers["amount"].to_numpy()[moved])
    # fraud amount quartiles near the published 127k / 441k / 1.52M
    q = fraud["amount"].quantile([0.25, 0.5, 0.75]).to_numpy()
    assert 60e3 < q[0] < 250e3 and 250e3 < q[1] < 800e3 and 0.8e6 < q[2] < 2.5e6


def test_balance_quirks(synth: pd.DataFrame) -> None:
    zero_origin = (synth["oldbalanceOrg"] == 0) & (synth["newbalanceOrig"] == 0)
    assert 0.26 < zero_origin.mean() < 0.38  # ~32 % in the Kaggle file
    merchant = synth["nameDest"].str.startswith("M")
    assert (merchant == (synth["type"] == "PAYMENT")).all()
    assert (synth.loc[merchant, ["oldbalanceDest", "newbalanceDest"]] == 0).all().all()
    assert synth["nameOrig"].str.startswith("C").all()
    legit = synth[(synth["isFraud"] == 0) & (synth["type"] != "CASH_IN")]
    floored = (legit["newbalanceOrig"] == 0) & (legit["amount"] > legit["oldbalanceOrg"])
    assert floored.mean() > 0.2
    # busy destinations show one end-of-step balance on all their rows in that step
    customers = synth[~merchant]
    shared = customers.groupby(["step", "nameDest"])["newbalanceDest"].nunique()
    assert (customers.groupby(["step", "nameDest"]).size() > 1).any()
    assert (shared == 1).all()


def test_time_profile(synth: pd.DataFrame) -> None:
    assert synth["step"].between(1, 743).all()
    hour = synth.loc[synth["isFraud"] == 0, "step"] % 24
    by_hour = hour.value_counts(normalize=True)
    assert (
        by_hour.loc[[18, 19, 20]].min() > 0.08 and by_hour.reindex([3, 4, 5]).fillna(0).max() < 0.01
    )
    late = synth[synth["step"] > 720]
    assert len(late) and late["isFraud"].all()  # the last day is fraud only
    assert step_profile().sum() == pytest.approx(1.0)


def test_flagged_fraud_is_rare_and_blocked() -> None:
    big = generate(2_000_000, seed=11)
    flagged = big[big["isFlaggedFraud"] == 1]
    assert 0 < len(flagged) < 20
    assert (flagged["type"] == "TRANSFER").all() and (flagged["isFraud"] == 1).all()
    assert (flagged["oldbalanceOrg"] == flagged["newbalanceOrig"]).all()  # no money moved
    assert (big.loc[flagged.index + 1, "amount"] == 0).all()  # then a 0.0 CASH_OUT


def test_written_csv_reads_back(tmp_path: Path) -> None:
    frame = generate(5_000, seed=1, fraud_rate=0.01)
    write_csv(frame, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    back = read_paysim(tmp_path / "s.csv")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False, check_categorical=False)
