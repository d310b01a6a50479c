"""A region's SuperNode process (``flame supernode``): Flower's ``flower-supernode`` with the
shorter polling (``flame.fl.polling``), the region's app approval (``flame.ops.approval``) and
the warm ClientApp launcher (``flame.ops.warm``)."""

from __future__ import annotations

import sys
from pathlib import Path

from flame.fl.polling import apply
from flame.ops.approval import approved, gate_supernode, use_region_commands
from flame.ops.warm import start_launcher


def supernode(
    argv: list[str], interval: float, warm: bool, trusted: list[str], commands: Path | None
) -> None:
    """Run ``flower-supernode`` with ``argv``, the shorter polling, the region's app approval
    (``trusted``: FLAME_TRUSTED_APPS; ``commands``: FLAME_COMMANDS_DIR; flame.ops.approval) and
    (``warm``) the warm ClientApp launcher (``flame.ops.warm``)."""
    from flwr.supernode.cli.flower_supernode import flower_supernode

    apply(interval)
    gate_supernode(approved(trusted, Path.cwd()) if trusted else None)
    use_region_commands(commands)  # the task programs the node's SuperExec may start
    if warm:
        start_launcher()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
