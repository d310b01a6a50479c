"""Flame's cap on Flower's idle polling sleeps (deployment round time)."""

from __future__ import annotations

import importlib
import time
from unittest.mock import patch

from flame import cli
from flame.fl import polling


def test_apply_patches_flowers_polling_modules_and_caps_their_sleep(monkeypatch) -> None:
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "")  # undone after, set or not
    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL")
    originals = {n: importlib.import_module(n).time for n in polling.PATCHED_MODULES}
    try:
        # the module exists in the pinned Flower: a rename fails here, not silently in prod
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
    with patch("flame.ops.node.supernode") as run:
        assert cli.main(["supernode", "--insecure", "--superlink", "x:8000", "--port", "1"]) == 0
    argv, interval, warm, trusted, commands = run.call_args.args
    assert argv == ["--insecure", "--superlink", "x:8000", "--port", "1"]
    assert interval == 0.25 and warm is True  # the warm ClientApp launcher is on by default
    assert trusted == [] and commands is None  # any app (ClientApps only), commands made at start


class _FakeGrid:
    """push_messages / pull_messages of a Grid whose replies arrive on the third pull."""

    def __init__(self) -> None:
        self.pulls = 0

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        return [f"id-{m}" for m in messages]

    def pull_messages(self, ids):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        self.pulls += 1
        if self.pulls < 3:
            return []
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ids]

    def get_node_ids(self) -> list[int]:
        return [1, 2]


def test_prompt_grid_polls_for_replies_at_the_interval_through_the_public_api() -> None:
    fake = _FakeGrid()
    grid = polling.PromptGrid(fake, 0.05)  # type: ignore[arg-type]
    started = time.perf_counter()
    replies = grid.send_and_receive(["a", "b"], timeout=30)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["id-a", "id-b"]
    assert fake.pulls == 3 and time.perf_counter() - started < 1.0  # Flower's own: 6 s
    assert grid.get_node_ids() == [1, 2]  # everything else is the Grid's
    late = polling.PromptGrid(_FakeGrid(), 0.05)  # type: ignore[arg-type]
    assert late.send_and_receive(["a"], timeout=0.01) == []  # gives up at the timeout


def test_object_pulls_retry_every_interval_not_after_flowers_1s_backoff() -> None:
    from flwr.supercore.inflatable import inflatable_utils as iu

    saved = {n: dict(getattr(iu, n).__kwdefaults__) for n in polling.PULL_FUNCTIONS}
    tries: list[float] = []

    def pull(object_id: str) -> bytes:  # the content arrives a moment after the message
        tries.append(time.perf_counter())
        if len(tries) < 3:
            raise iu.ObjectUnavailableError(object_id)
        return b"content"

    try:
        # both functions exist with these arguments in the pinned Flower
        assert polling.cap_pull_backoff(0.02) == list(polling.PULL_FUNCTIONS)
        assert iu.pull_objects(["a"], pull) == {"a": b"content"}
        assert tries[-1] - tries[0] < 0.5  # Flower's own backoff: 1 s, then 2 s
        assert iu.pull_objects.__kwdefaults__["max_time"] == saved["pull_objects"]["max_time"]
    finally:
        for name, defaults in saved.items():
            getattr(iu, name).__kwdefaults__.update(defaults)
