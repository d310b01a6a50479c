"""A model travels as one array (flame/fl/packing.py): exact round trip, transparent to the
ClientApp's handlers and to the strategy."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from flame.fl.packing import LAYOUT, PackedGrid, packed, packed_arrays, unpacked


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


def _content() -> RecordDict:
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(5, 3)).astype(np.float32),
        "b": np.array(2.5),  # 0-d
        "idx": np.array([3, 1, 4], np.int64),  # a top-k codec's indices
        "q": np.array([[-7, 8]], np.int8),  # an int8 codec's values
        "empty": np.zeros((0, 4), np.float32),
    }
    return RecordDict(
        {"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
         "metrics": MetricRecord({"loss": 0.5}), "config": ConfigRecord({"round": 2})}
    )  # fmt: skip


def test_round_trip_is_exact_and_leaves_the_rest_alone() -> None:
    content = _content()
    sent = packed(content)
    assert list(sent["arrays"].keys()) == ["bytes"] and LAYOUT in sent
    assert sent["metrics"] is content["metrics"] and sent["config"] is content["config"]
    assert "bytes" not in content["arrays"]  # the original is not changed
    back = unpacked(sent)
    assert list(back["arrays"].keys()) == list(content["arrays"].keys())
    for key in content["arrays"]:
        want, got = content["arrays"][key].numpy(), back["arrays"][key].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want), key
    assert LAYOUT not in back and back["metrics"] is content["metrics"]
    assert packed(sent) is sent and unpacked(content) is content  # idempotent
    message = Message(content, dst_node_id=1, message_type="train")
    fewer = Message(sent, dst_node_id=1, message_type="train")
    assert len(get_all_nested_objects(fewer)) < len(get_all_nested_objects(message)) - 5


def test_the_client_mod_unpacks_the_task_and_packs_only_what_came_packed() -> None:
    seen: list[list[str]] = []

    def handler(msg: Message, context: Context) -> Message:
        seen.append(list(msg.content["arrays"].keys()))
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    context = Context(1, 1, {}, RecordDict(), {})
    for content, reply_packed in ((packed(_content()), True), (_content(), False)):
        task = Message(content, dst_node_id=1, message_type="train")
        reply = packed_arrays(task, context, handler)
        assert seen[-1] == ["w", "b", "idx", "q", "empty"]  # the handler sees the model's arrays
        assert (LAYOUT in reply.content) is reply_packed


class _EchoGrid:
    """A Grid whose regions send back what they got, as the ClientApp mod would."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send_and_receive(
        self, messages: list[Message], *, timeout: float | None = None
    ) -> list[Message]:
        self.sent = list(messages)
        return [Message(m.content, reply_to=m) for m in self.sent]


def test_the_server_grid_packs_a_phase_once_and_unpacks_the_replies() -> None:
    shared = _content()  # Flower's strategies give every message of a phase one content
    messages = [Message(shared, dst_node_id=n, message_type="train") for n in (1, 2)]
    inner = _EchoGrid()
    replies = PackedGrid(inner).send_and_receive(messages)  # type: ignore[arg-type]
    assert inner.sent[0].content is inner.sent[1].content and LAYOUT in inner.sent[0].content
    for reply in replies:
        assert np.array_equal(reply.content["arrays"]["w"].numpy(), shared["arrays"]["w"].numpy())
