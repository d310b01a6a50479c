"""Flower ClientApp mods: what wraps every task of the ClientApp's handlers.

Listed outermost first in ``ClientApp(mods=[...])``, after ``packed_arrays``
(flame/fl/packing.py: the model travels as one array): ``refusals_as_errors`` turns a region's
refusal into an error reply; ``update_codec`` encodes the train reply's weights into the
compressed update that travels; ``simulated_attack`` (innermost, on the honest weights) makes
an adversarial region's update malicious.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, Context, Error, Message, MessageType
from flwr.common.constant import ErrorCode

from flame.fl.protocol import Refusal
from flame.fl.task import region_name, region_seed, task_settings
from flame.settings import FlameSettings

log = logging.getLogger("flame.client")
Handler = Callable[[Message, Context], Message]


def refusals_as_errors(msg: Message, context: Context, call_next: Handler) -> Message:
    """A region that refuses a task (``Refusal``, or rows it cannot learn from) answers with an
    error reply carrying the one-line reason, which the server logs and reports, instead of a
    crash with a traceback."""
    from flame.model.metrics import DegenerateDataError
    from flame.model.train import DivergedError

    try:
        return call_next(msg, context)
    except (Refusal, DegenerateDataError, DivergedError) as err:
        verb = "" if isinstance(err, DivergedError) else " refused"
        reason = f"{_region(msg, context)}{verb}: {err}"
        log.warning(reason)
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)


def _train_reply(msg: Message, reply: Message) -> bool:
    return msg.metadata.message_type == MessageType.TRAIN and not reply.has_error()


def _region(msg: Message, context: Context) -> str:
    try:
        return region_name(context, task_settings(context).regions)
    except (Refusal, ValueError):  # settings it cannot read: the node's own name for itself
        return str(context.node_config.get("region", "a region"))


def _region_and_seed(msg: Message, context: Context) -> tuple[FlameSettings, str, int]:
    settings = task_settings(context)
    region = region_name(context, settings.regions)
    return (
        settings,
        region,
        region_seed(settings.seed, region, int(msg.content["config"]["server-round"])),
    )


def simulated_attack(msg: Message, context: Context, call_next: Handler) -> Message:
    """A region in FLAME_ADVERSARIAL_REGIONS replaces its honest update with FLAME_ATTACK's
    (``label_flip`` happens where its rows are loaded: flame/fl/client_app.py)."""
    reply = call_next(msg, context)
    if not _train_reply(msg, reply):
        return reply
    settings, region, seed = _region_and_seed(msg, context)
    if region not in settings.adversarial_regions or settings.attack == "label_flip":
        return reply
    from flame.fl.attacks import poison_update

    received = msg.content["arrays"].to_torch_state_dict()
    honest = reply.content["arrays"].to_torch_state_dict()
    poisoned = poison_update(received, honest, settings.attack, settings.attack_scale, seed)
    reply.content["arrays"] = ArrayRecord(poisoned)  # type: ignore[arg-type]
    return reply


def update_codec(msg: Message, context: Context, call_next: Handler) -> Message:
    """Send the train reply's update in FLAME_CODEC's form (what travels; top-k keeps its
    error-feedback residual in the node state) and record the bytes each way."""
    reply = call_next(msg, context)
    if not _train_reply(msg, reply):
        return reply
    settings, _, seed = _region_and_seed(msg, context)
    received: ArrayRecord = msg.content["arrays"]
    arrays: ArrayRecord = reply.content["arrays"]
    if settings.codec != "none":
        from flame.fl.compression import client_encode

        arrays = client_encode(
            {k: received[k].numpy() for k in received}, {k: arrays[k].numpy() for k in arrays},
            settings.codec, settings.topk_ratio, context.state, seed,
        )  # fmt: skip
        reply.content["arrays"] = arrays
    metrics = reply.content["metrics"]
    metrics["bytes_sent"], metrics["bytes_received"] = arrays.count_bytes(), received.count_bytes()
    return reply
