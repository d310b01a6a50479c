"""Importing Flame does no work: no logging set-up, no plotting backend, no /proc reads."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import logging, sys
import flame.client_app, flame.server_app, flame.plots, flame.privacy, flame.simulate
assert not logging.getLogger("flame").handlers, "logging configured at import"
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported at import"
assert flame.client_app._process_start.cache_info().currsize == 0, "/proc read at import"
"""


def test_importing_flame_has_no_side_effects() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
