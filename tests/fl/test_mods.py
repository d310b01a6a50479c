"""flame/fl/mods.py: what wraps every ClientApp task: refusals as error replies, the update's
codec and a simulated adversary's poisoned update. Real Flower messages and contexts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from flame.fl.compression import RESIDUAL_KEY, server_decode
from flame.fl.mods import refusals_as_errors, simulated_attack, update_codec
from flame.fl.protocol import DIVERGED_REASON, Refusal
from flame.settings import load_settings, run_config

Handler = Callable[[Message, Context], Message]
GLOBAL = {
    "w": np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32),
    "b": np.array([0.25, -0.75], dtype=np.float32),
}
UPDATE = {  # what the region's training changed
    "w": np.array([[0.1, -0.4], [0.3, 0.2]], dtype=np.float32),
    "b": np.array([0.05, -0.5], dtype=np.float32),
}
LOCAL = {k: GLOBAL[k] + UPDATE[k] for k in GLOBAL}


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_run_id", "_task_id", "_node_id"):  # as Flower's runtime sets them
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """What the mods log on ``flame.client`` (the flame logger may not propagate to caplog)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.levelname} {record.getMessage()}")

    logger, keep = logging.getLogger("flame.client"), Keep()
    logger.addHandler(keep)
    yield seen
    logger.removeHandler(keep)


def _record(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in values.items()})


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: record[k].numpy() for k in record}


def _context(node: dict | None = None, **settings: object) -> Context:
    """A region's context; ``settings`` make the run's config (none: another app's run)."""
    run = run_config(load_settings(regions="us,eu", **settings)) if settings else {}
    return Context(1, 1, node or {"region": "eu"}, RecordDict(), run)  # type: ignore[arg-type]


def _task(kind: str = "train", rnd: int = 2, arrays: dict | None = None) -> Message:
    """A task as the ServerApp sends it: the global weights and the round's config."""
    content = RecordDict(
        {"arrays": _record(arrays or GLOBAL), "config": ConfigRecord({"server-round": rnd})}
    )
    return Message(content, dst_node_id=1, message_type=kind)


def _trained(local: dict[str, np.ndarray] | None = None) -> Handler:
    """The train handler's honest reply: its trained weights and metrics."""

    def handler(msg: Message, context: Context) -> Message:
        content = RecordDict(
            {"arrays": _record(local or LOCAL), "metrics": MetricRecord({"num_examples": 100})}
        )
        return Message(content, reply_to=msg)

    return handler


def _raising(err: Exception) -> Handler:
    def handler(msg: Message, context: Context) -> Message:
        raise err

    return handler


# refusals_as_errors


def test_a_refusal_or_unusable_rows_become_an_error_reply_naming_the_region(
    warnings: list[str],
) -> None:
    from flame.model.metrics import DegenerateDataError, require_usable_rows

    with pytest.raises(DegenerateDataError) as degenerate:
        require_usable_rows(np.zeros(100), "eu's training rows", "it cannot")
    policy = "eu refused: region policy: DP only (FLAME_DP=true)"
    no_fraud = "eu refused: eu's training rows: its 100 rows hold no fraud (isFraud=1); it cannot"
    task, context = _task(), _context(seed=3)
    for err, reason in (
        (Refusal("region policy: DP only (FLAME_DP=true)"), policy),
        (degenerate.value, no_fraud),
    ):
        reply = refusals_as_errors(task, context, _raising(err))
        assert reply.has_error() and not reply.has_content()
        assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert reply.error.reason == reason
        assert reply.metadata.message_type == "train"  # a reply to this task, back to its sender
        assert reply.metadata.dst_node_id == task.metadata.src_node_id
    assert warnings == [f"WARNING {policy}", f"WARNING {no_fraud}"]  # the server's log too


def test_a_divergence_is_reported_as_diverged_not_as_refused() -> None:
    """The server stops the run on an error reply holding DIVERGED_REASON."""
    import torch

    from flame.model.train import DivergedError, check_converging

    with pytest.raises(DivergedError) as diverged:
        check_converging(float("nan"), torch.nn.Linear(2, 1), np.array([0.0, 1.0]), 1.0)
    reply = refusals_as_errors(_task(), _context(seed=3), _raising(diverged.value))
    assert reply.error.reason == "eu: training diverged: the loss is nan and the weights are finite"
    assert DIVERGED_REASON in reply.error.reason and "refused" not in reply.error.reason


@pytest.mark.parametrize(
    ("node", "flame_run", "named"),
    [
        ({"partition-id": 1}, True, "eu"),  # the region its partition names in FLAME_REGIONS
        ({"region": "apac"}, False, "apac"),  # settings it cannot read: the node's own name
        ({"partition-id": 0}, False, "a region"),
        ({"partition-id": 5}, True, "a region"),  # a partition with no region
    ],
)
def test_the_reason_names_the_region_as_well_as_the_node_knows_it(
    node: dict, flame_run: bool, named: str
) -> None:
    context = _context(node, seed=3) if flame_run else _context(node)
    reply = refusals_as_errors(_task(), context, _raising(Refusal("no budget left")))
    assert reply.error.reason == f"{named} refused: no budget left"


def test_any_other_error_is_a_crash_and_an_answer_passes_untouched() -> None:
    task, context = _task(), _context(seed=3)
    with pytest.raises(KeyError, match="a bug"):
        refusals_as_errors(task, context, _raising(KeyError("a bug")))
    with pytest.raises(ZeroDivisionError):  # an ArithmeticError, yet not a divergence
        refusals_as_errors(task, context, _raising(ZeroDivisionError()))
    answer = _trained()(task, context)
    assert refusals_as_errors(task, context, lambda m, c: answer) is answer


# simulated_attack


def test_an_honest_region_and_label_flip_send_the_honest_update() -> None:
    for node, attack in (({"region": "us"}, "sign_flip"), ({"region": "eu"}, "label_flip")):
        context = _context(node, adversarial_regions="eu", attack=attack)
        reply = simulated_attack(_task(), context, _trained())
        sent = _numpy(reply.content["arrays"])
        assert all(np.array_equal(sent[k], LOCAL[k]) for k in LOCAL), (node, attack)


@pytest.mark.parametrize(("attack", "sign"), [("sign_flip", -1.0), ("scale", 1.0)])
def test_an_adversary_sends_the_global_model_plus_or_minus_scale_times_its_update(
    attack: str, sign: float
) -> None:
    context = _context(adversarial_regions="eu", attack=attack, attack_scale=3.0)
    reply = simulated_attack(_task(), context, _trained())
    sent = _numpy(reply.content["arrays"])
    assert list(sent) == ["w", "b"]  # the global model's keys, in its order
    for k in GLOBAL:
        assert np.allclose(sent[k], GLOBAL[k] + sign * 3.0 * UPDATE[k], atol=1e-6)
    assert reply.content["metrics"]["num_examples"] == 100  # only the weights change


def test_random_noise_is_scale_times_the_updates_size_seeded_per_region_and_round() -> None:
    def noise(region: str, rnd: int) -> dict[str, np.ndarray]:
        context = _context(
            {"region": region}, adversarial_regions="us,eu", attack="random", attack_scale=2.0
        )
        sent = _numpy(simulated_attack(_task(rnd=rnd), context, _trained()).content["arrays"])
        return {k: sent[k] - GLOBAL[k] for k in GLOBAL}

    first = noise("eu", 2)
    for k in GLOBAL:
        assert np.isclose(np.linalg.norm(first[k]), 2.0 * np.linalg.norm(UPDATE[k]), rtol=1e-5)
        assert not np.allclose(first[k], 2.0 * UPDATE[k])  # noise, not the update
    assert all(np.array_equal(first[k], noise("eu", 2)[k]) for k in GLOBAL)  # replayable
    assert not np.allclose(first["w"], noise("eu", 3)["w"])  # another round
    assert not np.allclose(first["w"], noise("us", 2)["w"])  # another region


def test_only_a_successful_train_reply_is_changed_and_nothing_else_reads_the_settings() -> None:
    """An evaluate reply, or a train task's error reply, passes through both update mods
    untouched, even in a context whose run config they could not read."""
    no_flame_run = _context()  # reading its settings would raise a Refusal
    evaluate = _task("evaluate")
    scored = Message(RecordDict({"metrics": MetricRecord({"pr_auc": 0.5})}), reply_to=evaluate)
    train = _task()
    failed = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "eu refused: x"), reply_to=train)
    for mod in (simulated_attack, update_codec):
        assert mod(evaluate, no_flame_run, lambda m, c: scored) is scored
        assert mod(train, no_flame_run, lambda m, c: failed) is failed
    assert dict(scored.content["metrics"]) == {"pr_auc": 0.5}  # no byte counts added


# update_codec


def test_without_a_codec_the_weights_travel_as_they_are_with_the_bytes_counted() -> None:
    reply = update_codec(_task(), _context(codec="none"), _trained())
    sent = _numpy(reply.content["arrays"])
    assert all(np.array_equal(sent[k], LOCAL[k]) for k in LOCAL)
    metrics = reply.content["metrics"]
    size = _record(LOCAL).count_bytes()
    assert (metrics["bytes_sent"], metrics["bytes_received"]) == (size, size)
    assert size > 6 * 4 and metrics["num_examples"] == 100  # six float32 values and framing


def test_fp16_sends_the_update_in_half_precision() -> None:
    reply = update_codec(_task(), _context(codec="fp16"), _trained())
    sent: ArrayRecord = reply.content["arrays"]
    assert list(sent) == ["values"]
    values = sent["values"].numpy()
    expected = np.concatenate([(LOCAL[k] - GLOBAL[k]).ravel() for k in GLOBAL])
    assert values.dtype == np.float16 and np.array_equal(values, expected.astype(np.float16))
    decoded = _numpy(server_decode(sent, _record(GLOBAL), "fp16"))
    assert all(np.allclose(decoded[k], LOCAL[k], atol=1e-3) for k in LOCAL)
    metrics = reply.content["metrics"]
    assert metrics["bytes_sent"] == sent.count_bytes()
    assert metrics["bytes_received"] == _record(GLOBAL).count_bytes()


def test_int8_rounding_is_seeded_per_region_and_round_and_decodes_to_the_weights() -> None:
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(40, 25)).astype(np.float32)}
    local = {"w": start["w"] + rng.normal(scale=0.1, size=(40, 25)).astype(np.float32)}

    def sent(region: str, rnd: int) -> ArrayRecord:
        context = _context({"region": region}, codec="int8")
        return update_codec(_task(rnd=rnd, arrays=start), context, _trained(local)).content[
            "arrays"
        ]

    first = sent("eu", 2)
    q = first["q"].numpy()
    assert q.dtype == np.int8 and q.shape == (1_000,)
    assert np.array_equal(q, sent("eu", 2)["q"].numpy())  # replayable
    assert not np.array_equal(q, sent("eu", 3)["q"].numpy())  # another round's rounding
    assert not np.array_equal(q, sent("us", 2)["q"].numpy())  # another region's
    step = float(first["scale"].numpy()[0])
    decoded = server_decode(first, _record(start), "int8")["w"].numpy()
    assert np.abs(decoded - local["w"]).max() <= step * 1.001  # within one rounding step


def test_topk_keeps_what_it_did_not_send_and_sends_it_in_a_later_round() -> None:
    context = _context(codec="topk", topk_ratio=0.25)  # one entry of each tensor a round
    first = update_codec(_task(rnd=1), context, _trained()).content["arrays"]
    # flat update [0.1, -0.4, 0.3, 0.2 | 0.05, -0.5]: the largest of w, the largest of b
    assert first["idx"].numpy().tolist() == [1, 5]
    assert np.allclose(first["val"].numpy(), [-0.4, -0.5], atol=1e-6)
    residual = _numpy(context.state.array_records[RESIDUAL_KEY])
    assert np.allclose(residual["w"], [[0.1, 0.0], [0.3, 0.2]], atol=1e-6)
    assert np.allclose(residual["b"], [0.05, 0.0], atol=1e-6)
    # the next round trains nothing new: what travels is the largest of what was held back
    second = update_codec(_task(rnd=2), context, _trained(GLOBAL)).content["arrays"]
    assert second["idx"].numpy().tolist() == [2, 4]
    assert np.allclose(second["val"].numpy(), [0.3, 0.05], atol=1e-6)


def test_the_codec_encodes_the_adversarys_poisoned_weights() -> None:
    """In the ClientApp's order update_codec wraps simulated_attack: the poisoned update is
    what travels, and what the server decodes."""
    context = _context(codec="fp16", adversarial_regions="eu", attack="sign_flip", attack_scale=1.0)

    def inner(msg: Message, ctx: Context) -> Message:
        return simulated_attack(msg, ctx, _trained())

    reply = update_codec(_task(), context, inner)
    decoded = _numpy(server_decode(reply.content["arrays"], _record(GLOBAL), "fp16"))
    assert all(np.allclose(decoded[k], GLOBAL[k] - UPDATE[k], atol=1e-3) for k in GLOBAL)
