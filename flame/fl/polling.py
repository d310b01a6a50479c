"""Shorter idle polling in Flower 1.42's deployment runtime.

Flower 1.42 sleeps a fixed 3 s whenever a SuperNode finds no message and between a ServerApp's
polls for replies, so each train or evaluate phase waits on average several seconds doing
nothing. Both waits are capped at FLAME_POLL_INTERVAL:
- the ServerApp's, through the public Grid API: ``PromptGrid`` is Flower's ``send_and_receive``
  loop (``push_messages``, then ``pull_messages`` until every reply is in) with that interval;
- the SuperNode's, which has no public hook: ``apply()``, called by ``flame supernode`` (a
  ``flower-supernode`` wrapper), caps the sleeps of Flower's polling module and sets the
  SuperExec's own FLWR_SUPEREXEC_TASK_POLL_INTERVAL;
- the retries of Flower's object pulls (``cap_pull_backoff()``, in the ServerApp, the SuperNode
  and every ClientApp task). A message's content arrives after the message itself, and a pull
  that finds it missing waits 1 s, then 2 s, 4 s ... before it asks again; a warm ClientApp
  asks within milliseconds, so most tasks paid that second. Retries now start at a fifth of
  the interval and double up to it (still giving up after Flower's 2 hours).
A Flower version whose module or function moved is detected: the patch is skipped with a
warning, and a unit test fails, rather than breaking. The cost is more idle HTTP requests (one
per waiting process per interval).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.app import Message
    from flwr.serverapp import Grid

log = logging.getLogger("flame.fl.polling")
PATCHED_MODULES = ("flwr.supernode.start_client_internal",)


class _CappedSleep(types.ModuleType):
    """Stands in for ``time`` inside one Flower module: ``sleep`` waits at most ``cap``."""

    def __init__(self, cap: float) -> None:
        super().__init__("time")
        self.cap = cap

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))


def apply(interval: float) -> list[str]:
    """Cap Flower's idle sleeps at ``interval`` seconds; returns the modules patched."""
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(interval))
    cap_pull_backoff(interval)
    patched = []
    for name in PATCHED_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            log.warning("poll interval: %s not found in this Flower; not patched", name)
            continue
        if not isinstance(getattr(module, "time", None), types.ModuleType):
            log.warning("poll interval: %s does not use the time module; not patched", name)
            continue
        module.time = _CappedSleep(interval)  # type: ignore[attr-defined]
        patched.append(name)
    return patched


PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")
PULL_BACKOFF = ("initial_backoff", "backoff_cap", "max_tries_per_object")


def cap_pull_backoff(interval: float) -> list[str]:
    """Retry Flower's object pulls every ``interval`` s; returns the functions changed."""
    from flwr.supercore.inflatable import inflatable_utils

    changed = []
    for name in PULL_FUNCTIONS:
        defaults = getattr(getattr(inflatable_utils, name, None), "__kwdefaults__", None) or {}
        if not all(key in defaults for key in PULL_BACKOFF):
            log.warning("poll interval: %s has no backoff arguments here; not changed", name)
            continue
        # tries unlimited: the pull still gives up after its max_time (Flower: 2 hours)
        # the content is usually there within tens of ms: first retry at interval / 5, then
        # doubling up to the interval
        defaults.update(initial_backoff=interval / 5, backoff_cap=interval)
        defaults.update(max_tries_per_object=None)
        changed.append(name)
    return changed


class PromptGrid:
    """A ServerApp's Grid whose ``send_and_receive`` polls for replies every ``interval`` s
    (Flower 1.42: 3 s); everything else is the wrapped Grid's."""

    def __init__(self, grid: Grid, interval: float) -> None:
        self._grid = grid
        self.interval = min(interval, getattr(grid, "pull_interval", interval))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        pending = set(self._grid.push_messages(messages))
        end, replies = time.time() + (timeout or 0.0), []
        while timeout is None or time.time() < end:
            got = list(self._grid.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending:
                break
            time.sleep(self.interval)
        return replies
