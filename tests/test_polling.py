"""Flame's cap on Flower's idle polling sleeps (deployment round time)."""

from __future__ import annotations

import importlib
import time
from unittest.mock import patch

from flame import cli
from flame.ops import polling


def test_apply_patches_flowers_polling_modules_and_caps_their_sleep(monkeypatch) -> None:
    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", raising=False)
    originals = {n: importlib.import_module(n).time for n in polling.PATCHED_MODULES}
    try:
        # both modules exist in the pinned Flower: a rename fails here, not silently in prod
        assert polling.apply(0.05) == list(polling.PATCHED_MODULES)
        for name in polling.PATCHED_MODULES:
            fake_time = importlib.import_module(name).time
            started = time.perf_counter()
            fake_time.sleep(3)
            assert time.perf_counter() - started < 1.0
            assert abs(fake_time.time() - time.time()) < 1.0  # everything else is time's
        import os

        assert os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.05"
    finally:
        for name, original in originals.items():
            importlib.import_module(name).time = original


def test_flame_supernode_passes_every_flag_to_flower_supernode() -> None:
    with patch("flame.ops.polling.supernode") as run:
        assert cli.main(["supernode", "--insecure", "--superlink", "x:8000", "--port", "1"]) == 0
    argv, interval, warm = run.call_args.args
    assert argv == ["--insecure", "--superlink", "x:8000", "--port", "1"]
    assert interval == 0.25 and warm is True  # the warm ClientApp launcher is on by default
