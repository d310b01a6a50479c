"""flame/fl/protocol.py: the names and exceptions the ClientApp and the ServerApp share."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from flame.fl import protocol
from flame.fl.protocol import (
    BAD_INPUT,
    DIVERGED_REASON,
    EVALUATE_FIRST,
    INFO_KEY,
    VALIDATION_KEY,
    Refusal,
    RunDiverged,
    RunFailed,
    RunLearntNothing,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_module_imports_nothing() -> None:
    """Kept import-free: importing it (and its packages) loads no third-party module."""
    tree = ast.parse(Path(protocol.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    check = (
        "import sys, flame.fl.protocol\n"
        "heavy = {'flwr', 'numpy', 'torch', 'pydantic', 'pandas'} & set(sys.modules)\n"
        "assert not heavy, sorted(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_names_on_the_wire_are_stable_and_distinct() -> None:
    """Regions and servers of one release talk through these keys: a rename breaks them."""
    names = (INFO_KEY, EVALUATE_FIRST, VALIDATION_KEY)
    assert names == ("info", "evaluate-first", "validation")
    assert BAD_INPUT == "bad input: " and DIVERGED_REASON == "training diverged"


def test_every_way_a_run_fails_is_a_run_failed_and_a_refusal_is_none() -> None:
    for kind in (RunDiverged, RunLearntNothing):
        assert issubclass(kind, RunFailed) and issubclass(kind, RuntimeError)
        with pytest.raises(RunFailed, match=r"^round 2: no model was saved$"):
            raise kind("round 2: no model was saved")
    assert not issubclass(RunLearntNothing, RunDiverged)
    assert not issubclass(Refusal, RunFailed | RuntimeError)  # a region's answer, not a failure
    assert not issubclass(RunFailed, Refusal)
    assert str(Refusal("region policy: DP only")) == "region policy: DP only"
