"""Importing Flame does no work: no logging set-up, no plotting backend, no /proc reads."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import logging, sys
import flame.fl.client_app, flame.fl.server_app, flame.fl.privacy
import flame.track.plots, flame.ops.simulate
assert not logging.getLogger("flame").handlers, "logging configured at import"
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported at import"
assert flame.fl.client_app._process_start.cache_info().currsize == 0, "/proc read at import"
"""


def test_importing_flame_has_no_side_effects() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
