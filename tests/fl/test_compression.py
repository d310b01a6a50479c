from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, RecordDict

from flame.fl.compression import RESIDUAL_KEY, client_encode, decode, encode, server_decode

SHAPES = {"a": (64, 19), "b": (64,), "c": (1, 32)}


@pytest.fixture
def update() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in SHAPES.items()}


def size(update: dict[str, np.ndarray]) -> int:
    return ArrayRecord({k: Array(v) for k, v in update.items()}).count_bytes()


def test_fp16_round_trip(update: dict[str, np.ndarray]) -> None:
    record = encode(update, "fp16", 0.1, np.random.default_rng(1))
    back = decode(record, "fp16", SHAPES)
    for k in update:
        assert np.allclose(back[k], update[k], rtol=1e-3, atol=1e-6)
    assert record.count_bytes() < 0.55 * size(update)


def test_int8_error_bound_and_unbiased(update: dict[str, np.ndarray]) -> None:
    record = encode(update, "int8", 0.1, np.random.default_rng(1))
    back = decode(record, "int8", SHAPES)
    for k, v in update.items():
        step = np.abs(v).max() / 127
        assert np.abs(back[k] - v).max() <= step + 1e-7  # stochastic rounding: < one step
    assert record.count_bytes() < 0.35 * size(update)
    # unbiased: the mean of many encodings converges to the value
    v = {"x": np.full((1000,), 0.3, dtype=np.float32) * np.linspace(-1, 1, 1000, dtype=np.float32)}
    mean = np.mean(
        [decode(encode(v, "int8", 0, np.random.default_rng(s)), "int8", {"x": (1000,)})["x"]
         for s in range(200)], axis=0,
    )  # fmt: skip
    assert np.abs(mean - v["x"]).max() < 0.3 / 127 * 0.35


def test_topk_keeps_largest_and_shrinks(update: dict[str, np.ndarray]) -> None:
    record = encode(update, "topk", 0.1, np.random.default_rng(1))
    back = decode(record, "topk", SHAPES)
    for k, v in update.items():
        kept = np.flatnonzero(back[k].ravel())
        assert len(kept) == int(np.ceil(0.1 * v.size))
        threshold = np.sort(np.abs(v).ravel())[-len(kept)]
        assert np.abs(v.ravel()[kept]).min() >= threshold
    assert record.count_bytes() < 0.25 * size(update)


def test_topk_error_feedback_bookkeeping(update: dict[str, np.ndarray]) -> None:
    state = RecordDict()
    zero = {k: np.zeros(s, dtype=np.float32) for k, s in SHAPES.items()}
    sent_total = {k: np.zeros(s, dtype=np.float32) for k, s in SHAPES.items()}
    for r in range(3):
        record = client_encode(zero, update, "topk", 0.1, state, r)
        sent = decode(record, "topk", SHAPES)
        residual = {k: state.array_records[RESIDUAL_KEY][k].numpy() for k in SHAPES}
        for k in SHAPES:
            sent_total[k] += sent[k]
            # everything the region wanted to send so far = what was sent + what is owed
            assert np.allclose(sent_total[k] + residual[k], (r + 1) * update[k], atol=1e-5)


def test_server_decode_adds_update_to_global(update: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    global_np = {k: rng.normal(0, 1, s).astype(np.float32) for k, s in SHAPES.items()}
    global_arrays = ArrayRecord({k: Array(v) for k, v in global_np.items()})
    local = {k: global_np[k] + update[k] for k in SHAPES}
    encoded = client_encode(global_np, local, "fp16", 0.1, RecordDict(), 0)
    full = server_decode(encoded, global_arrays, "fp16")
    assert list(full.keys()) == list(SHAPES)
    for k in SHAPES:
        assert np.allclose(full[k].numpy(), local[k], atol=1e-4)


@pytest.mark.integration
def test_compressed_run_logs_smaller_messages(tmp_path: Path) -> None:
    from tests.test_integration import run_main

    sizes = {}
    for codec in ("none", "int8"):
        out = tmp_path / codec
        run_main(
            ["--rounds", "2", "--rows", "20000", "--fraud-rate", "0.01", "--local-epochs", "1",
             "--out", str(out)],
            {"FLAME_CODEC": codec},
        )  # fmt: skip
        table = pd.read_csv(out / "metrics.csv")
        train = table[(table["stage"] == "train") & (table["kind"] == "client:us")]
        assert len(train) == 2
        sizes[codec] = train["bytes_sent"].mean()
        server = table[(table["kind"] == "server") & (table["round"] == 2)].iloc[0]
        assert server["roc_auc"] > 0.9, codec
    assert sizes["int8"] < 0.4 * sizes["none"]


def test_update_noise_needs_plain_updates() -> None:
    from flame.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="FLAME_UPDATE_NOISE"):
        load_settings(update_noise=0.1, codec="int8")


@pytest.mark.integration
def test_update_noise_run_uses_flowers_clipping_wrapper(tmp_path: Path) -> None:
    from tests.test_integration import run_main

    out = tmp_path / "noise"
    proc = run_main(
        ["--rounds", "1", "--rows", "20000", "--fraud-rate", "0.01", "--local-epochs", "1",
         "--out", str(out)],
        {"FLAME_UPDATE_NOISE": "0.01", "FLAME_UPDATE_CLIP": "5"},
    )  # fmt: skip
    logs = proc.stdout + proc.stderr
    assert "parameters are clipped by value: 5.0000" in logs
    assert "central DP noise with" in logs
    table = pd.read_csv(out / "metrics.csv")
    assert set(table.loc[table["kind"] == "server", "round"]) == {0, 1}
