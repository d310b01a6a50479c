from __future__ import annotations

import numpy as np

from flame.features import build_features, feature_names
from flame.synth import generate


def test_shapes_names_and_drop_balances() -> None:
    frame = generate(2_000, seed=1)
    full = build_features(frame)
    dropped = build_features(frame, drop_balances=True)
    assert full.dtype == np.float32 and full.shape == (2_000, len(feature_names()))
    assert dropped.shape == (2_000, len(feature_names(True)))
    assert not any("balance" in n or "error" in n for n in feature_names(True))
    assert np.isfinite(full).all() and np.abs(full).max() <= 1.0 + 1e-6


def test_transforms_are_fixed_not_fitted() -> None:
    """A row's features do not depend on which other rows are transformed with it."""
    frame = generate(3_000, seed=2, fraud_rate=0.02)
    whole = build_features(frame)
    alone = np.vstack([build_features(frame.iloc[[i]]) for i in (0, 10, 2_999)])
    assert np.array_equal(whole[[0, 10, 2_999]], alone)


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
