"""Flower ClientApp mods: what wraps every task of the ClientApp's handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from flame.fl.protocol import Refusal

log = logging.getLogger("flame.client")
Handler = Callable[[Message, Context], Message]


def refusals_as_errors(msg: Message, context: Context, call_next: Handler) -> Message:
    """A region that refuses a task (``Refusal``, or rows with one class only) answers with an
    error reply carrying the one-line reason, which the server logs and reports, instead of a
    crash with a traceback."""
    from flame.model.metrics import DegenerateDataError

    try:
        return call_next(msg, context)
    except (Refusal, DegenerateDataError) as err:
        from flame.fl.client_app import region_name
        from flame.settings import load_settings

        reason = f"{region_name(context, load_settings(context.run_config))} refused: {err}"
        log.warning(reason)
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
