"""Update compression on the client -> server path. The encoded form is what travels.

Every codec encodes the model *update* (local weights minus the round's global weights); the
server decodes and adds it back to the global weights before any aggregation rule sees it.

- ``fp16``: half precision (2 bytes per value).
- ``int8``: per-tensor scale ``max|x| / 127`` and stochastic rounding (unbiased), 1 byte per
  value + one float32 scale.
- ``topk``: the ``topk_ratio`` largest-magnitude entries of each tensor (int32 index + float32
  value). Error feedback: what was not sent is kept per region (in the SuperNode's context
  state, across rounds) and added to the next round's update.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

Arrays = dict[str, np.ndarray]
RESIDUAL_KEY = "topk-residual"


def encode(update: Arrays, codec: str, ratio: float, rng: np.random.Generator) -> ArrayRecord:
    """All tensors flattened into one vector (key order) so per-array framing is paid once."""
    sizes = [v.size for v in update.values()]
    flat = np.concatenate([v.astype(np.float32).ravel() for v in update.values()])
    if codec == "fp16":
        out = {"values": flat.astype(np.float16)}
    elif codec == "int8":
        bounds = np.cumsum([0, *sizes])
        scales = np.array(
            [np.abs(flat[a:b]).max(initial=0.0) / 127 or 1.0 for a, b in pairwise(bounds)],
            dtype=np.float32,
        )
        scaled = flat / np.repeat(scales, sizes)
        rounded = np.floor(scaled + rng.random(flat.shape, dtype=np.float32))
        out = {"q": np.clip(rounded, -127, 127).astype(np.int8), "scale": scales}
    elif codec == "topk":
        bounds = np.cumsum([0, *sizes])
        picks = []
        for a, b in pairwise(bounds):
            k = max(1, int(np.ceil(ratio * (b - a))))
            picks.append(a + np.argpartition(np.abs(flat[a:b]), -k)[-k:])
        index = np.sort(np.concatenate(picks)).astype(np.int32)
        out = {"idx": index, "val": flat[index]}
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return ArrayRecord({k: Array(v) for k, v in out.items()})


def decode(record: ArrayRecord, codec: str, shapes: dict[str, tuple[int, ...]]) -> Arrays:
    sizes = [int(np.prod(s)) for s in shapes.values()]
    if codec == "fp16":
        flat = record["values"].numpy().astype(np.float32)
    elif codec == "int8":
        flat = record["q"].numpy().astype(np.float32) * np.repeat(record["scale"].numpy(), sizes)
    elif codec == "topk":
        flat = np.zeros(sum(sizes), dtype=np.float32)
        flat[record["idx"].numpy()] = record["val"].numpy()
    else:
        raise ValueError(f"unknown codec {codec!r}")
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return {k: p.reshape(s) for (k, s), p in zip(shapes.items(), parts, strict=True)}


def client_encode(
    global_arrays: Arrays, local_arrays: Arrays, codec: str, ratio: float, state: RecordDict,
    seed: int,
) -> ArrayRecord:  # fmt: skip
    """Encode this round's update; for top-k, apply and update the error-feedback residual."""
    update = {k: local_arrays[k] - global_arrays[k] for k in global_arrays}
    if codec == "topk" and RESIDUAL_KEY in state.array_records:
        residual = state.array_records[RESIDUAL_KEY]
        update = {k: v + residual[k].numpy() for k, v in update.items()}
    encoded = encode(update, codec, ratio, np.random.default_rng(seed))
    if codec == "topk":
        sent = decode(encoded, codec, {k: v.shape for k, v in update.items()})
        state[RESIDUAL_KEY] = ArrayRecord({k: Array(update[k] - sent[k]) for k in update})
    return encoded


def server_decode(encoded: ArrayRecord, global_arrays: ArrayRecord, codec: str) -> ArrayRecord:
    """Full weights (global + decoded update), in the global model's key order."""
    base = {k: global_arrays[k].numpy() for k in global_arrays}
    update = decode(encoded, codec, {k: v.shape for k, v in base.items()})
    return ArrayRecord({k: Array((base[k] + update[k]).astype(base[k].dtype)) for k in base})
