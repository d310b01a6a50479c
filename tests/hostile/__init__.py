"""Hostile coordinators: ServerApps an attacker who runs the SuperLink could run.

Regions approve the FAB (``FLAME_TRUSTED_APPS``), so the code they run is the genuine app; the
coordinator, though, controls its own side. ``tests.hostile.serverapp`` is Flower's own
``flwr-serverapp`` that installs the genuine FAB and then runs the ServerApp named by
``HOSTILE_SERVERAPP`` (``module:attribute``) instead of the FAB's; ``deployment_env`` puts it
first on the SuperLink's PATH. An attack writes what it learnt into ``HOSTILE_OUT``.

The helpers below are what every attack needs on the server side: the connected nodes, and a
task message as Flame's server sends it (the model travels packed: wrap the grid in
``flame.fl.packing.PackedGrid``). The run settings the regions train with are the run config the
coordinator submits (``flwr run --run-config``, or ``flame launch`` from its environment): it
controls them, but for the whole run, never per message.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

APP_ENV = "HOSTILE_SERVERAPP"  # module:attribute of the ServerApp the coordinator runs
OUT_ENV = "HOSTILE_OUT"  # folder the attack writes its findings to


def out_folder() -> Path:
    folder = Path(os.environ[OUT_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for_nodes(grid: Grid, want: int, timeout: float = 120) -> list[int]:
    """The connected nodes once ``want`` are (all of them after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    return nodes


def task(
    arrays: ArrayRecord, rnd: int, node: int, kind: str = MessageType.TRAIN,
    **config: int | float | str | bool,
) -> Message:  # fmt: skip
    """A train (or evaluate) task for ``node``, as Flame's own server sends it."""
    record = ConfigRecord({"server-round": rnd, **config})
    content = RecordDict({"arrays": arrays, "config": record})
    return Message(content=content, message_type=kind, dst_node_id=node)
