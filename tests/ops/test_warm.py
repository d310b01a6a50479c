"""The warm ClientApp launcher: a fresh forked process per task, no state carried over, a
crashing task leaves it running, and a launcher that is down means a cold start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flame.ops.handoff import delegate

LAUNCHER = """
import os, sys
from pathlib import Path
import flame.ops.warm as warm

COUNTER = {"tasks": 0}  # module-level state of the parent


def task():
    COUNTER["tasks"] += 1
    out, kind = sys.argv[1:]
    Path(out).write_text(f"{COUNTER['tasks']} {os.getpid()} {os.environ['MARK']} {os.getcwd()}")
    if kind == "crash":
        os.abort()


warm.preload = lambda: None
warm.run_clientapp_task = task
warm.serve(Path(sys.argv[1]))
"""


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_each_task_is_a_fresh_fork_and_a_crash_does_not_stop_the_launcher(
    tmp_path: Path, monkeypatch
) -> None:
    sock = tmp_path / "launcher.sock"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(sock)])
    try:
        _wait_for(sock)
        assert oct(sock.stat().st_mode & 0o777) == "0o600"  # only this user may hand it tasks
        outputs = [tmp_path / f"task{i}.txt" for i in range(3)]
        monkeypatch.chdir(tmp_path)
        for i, (out, kind) in enumerate(zip(outputs, ("ok", "crash", "ok"), strict=True)):
            monkeypatch.setenv("MARK", f"run{i}")
            pid = delegate(str(sock), [str(out), kind])
            assert pid is not None and pid != launcher.pid
            _wait_for(out)
        seen = [out.read_text().split() for out in outputs]
        assert [s[0] for s in seen] == ["1", "1", "1"]  # no task sees another's state
        assert len({s[1] for s in seen}) == 3  # three processes
        assert [s[2] for s in seen] == ["run0", "run1", "run2"]  # each with its own env
        assert all(s[3] == str(tmp_path) for s in seen), seen
        assert launcher.poll() is None  # alive after the crash
    finally:
        launcher.terminate()
        launcher.wait(10)
    assert delegate(str(sock), ["x", "ok"]) is None  # down: the caller starts the task cold
    assert not sock.exists()


def test_the_shim_starts_a_task_cold_when_the_launcher_is_down(tmp_path: Path) -> None:
    env = os.environ | {"FLAME_WARM_SOCKET": str(tmp_path / "gone.sock")}
    proc = subprocess.run(
        [sys.executable, "-m", "flame.ops.approval", "--help"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "--runtime-api-address" in proc.stdout  # Flower's own CLI
    assert "warm ClientApp launcher" in proc.stderr and "starts cold" in proc.stderr
