"""Each model travels as one array: fewer objects per message in Flower's deployment runtime.

Flower 1.42 sends every ``Array`` of a message as its own objects (the array and its chunk),
each one HTTP request from the ServerApp to the SuperLink, to the SuperNode, to the ClientApp
and back; a six-layer-array model is twelve of the eighteen objects of a train reply. On a
loaded machine each request costs CPU in the SuperLink (and TLS plus a signature check in
compose). ``packed`` turns every ArrayRecord of a message into one byte array plus a
ConfigRecord of names, dtypes and shapes; ``unpacked`` gives the exact arrays back. The server
packs what it sends (``PackedGrid``) and unpacks the replies; the ClientApp unpacks what it
receives and packs its reply only when the task came packed (``packed_arrays``, its outermost
mod), so the strategy, the codecs and the attacks all see the model's own arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from flame.fl.mods import Handler

LAYOUT = "packed-layout"  # ConfigRecord: per packed ArrayRecord, its arrays' names/dtypes/shapes
BYTES = "bytes"  # the one Array a packed ArrayRecord holds


def packed(content: RecordDict) -> RecordDict:
    """``content`` with each ArrayRecord turned into one byte array (already packed: as is)."""
    if LAYOUT in content:
        return content
    out, layout = RecordDict(), {}
    for name, record in content.items():
        if not isinstance(record, ArrayRecord):
            out[name] = record
            continue
        arrays = [np.asarray(record[key].numpy(), order="C") for key in record]
        layout[f"{name}.keys"] = list(record.keys())
        layout[f"{name}.dtypes"] = [a.dtype.str for a in arrays]
        layout[f"{name}.ndims"] = [a.ndim for a in arrays]
        layout[f"{name}.shape"] = [int(n) for a in arrays for n in a.shape]
        parts = [a.reshape(-1).view(np.uint8) for a in arrays]
        out[name] = ArrayRecord({BYTES: Array(np.concatenate([np.empty(0, np.uint8), *parts]))})
    if not layout:
        return content
    out[LAYOUT] = ConfigRecord(layout)  # type: ignore[arg-type]
    return out


def unpacked(content: RecordDict) -> RecordDict:
    """``content`` as it was before ``packed`` (not packed: as is)."""
    if LAYOUT not in content:
        return content
    layout, out = content.config_records[LAYOUT], RecordDict()
    for name, record in content.items():
        if name == LAYOUT:
            continue
        out[name] = (
            _arrays(record[BYTES].numpy(), layout, name)
            if isinstance(record, ArrayRecord)
            else record
        )
    return out


def _arrays(flat: np.ndarray, layout: ConfigRecord, name: str) -> ArrayRecord:
    shape, offset, arrays = iter(layout[f"{name}.shape"]), 0, {}  # type: ignore[call-overload]
    for key, dtype, ndim in zip(
        layout[f"{name}.keys"], layout[f"{name}.dtypes"], layout[f"{name}.ndims"], strict=True,  # type: ignore[call-overload]
    ):  # fmt: skip
        dims = tuple(int(next(shape)) for _ in range(int(ndim)))
        size = int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
        arrays[key] = Array(flat[offset : offset + size].view(dtype).reshape(dims).copy())
        offset += size
    return ArrayRecord(arrays)  # type: ignore[arg-type]


def packed_arrays(msg: Message, context: Context, call_next: Handler) -> Message:
    """ClientApp mod: unpack the task, run it, pack the reply the way the task came."""
    was_packed = LAYOUT in msg.content
    msg.content = unpacked(msg.content)
    reply = call_next(msg, context)
    if was_packed and not reply.has_error():
        reply.content = packed(reply.content)
    return reply


class PackedGrid:
    """A ServerApp's Grid that packs the messages it sends and unpacks their replies."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        messages = list(messages)
        done: dict[int, RecordDict] = {}  # a phase's messages share one content: pack it once
        for message in messages:
            key = id(message.content)
            if key not in done:
                done[key] = packed(message.content)
            message.content = done[key]
        replies = self._grid.send_and_receive(messages, timeout=timeout)
        for reply in replies:
            if not reply.has_error():
                reply.content = unpacked(reply.content)
        return replies
