"""Shorter idle polling in Flower 1.42's deployment runtime.

Flower 1.42 sleeps a fixed 3 s whenever a SuperNode finds no message and between a ServerApp's
polls for replies, so each train or evaluate phase waits on average several seconds doing
nothing. ``apply()`` caps those sleeps at FLAME_POLL_INTERVAL (and sets the SuperExec's own
FLWR_SUPEREXEC_TASK_POLL_INTERVAL) in the process it runs in: ``flame supernode`` (a
``flower-supernode`` wrapper) and the Flame ServerApp call it. The cost is more idle HTTP
requests to the SuperLink (one per node per interval). Flower versions whose modules moved are
detected: the patch is skipped with a warning, and a unit test fails, rather than breaking.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import types

log = logging.getLogger("flame.ops.polling")
PATCHED_MODULES = ("flwr.supernode.start_client_internal", "flwr.superlink.grid.http_grid")


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


def supernode(argv: list[str], interval: float, warm: bool) -> None:
    """Run ``flower-supernode`` with ``argv``, the shorter polling and (``warm``) the warm
    ClientApp launcher (``flame.ops.warm``)."""
    import sys

    from flwr.supernode.cli.flower_supernode import flower_supernode

    from flame.ops.approval import use_flame_clientapp

    apply(interval)
    use_flame_clientapp()  # every ClientApp task passes the region's approval check
    if warm:
        from flame.ops.warm import start_launcher

        start_launcher()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
