"""``flame supernode``: Flower's ``flower-supernode`` with the flags it was given, started only
after the shorter polling, the region's app approval, Flame's task programs and (warm) the warm
ClientApp launcher are in place; a node that cannot enforce them does not start."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supernode import start_client_internal

from flame.fl import polling
from flame.ops import approval, node
from flame.ops.handoff import SOCKET_ENV
from tests.conftest import ROOT

POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
# the module (its package's attribute of that name is the function)
flower_cli = importlib.import_module("flwr.supernode.cli.flower_supernode")


class Started:
    """What ``flower_supernode`` found when it was called, and the gate's approved hashes."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.allowed: list[set[str] | None] = []
        self.launchers = 0


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Started:
    """Flower's ``flower_supernode`` replaced by one that records the process's state; all that
    ``supernode`` changes in this process (Flower's modules, PATH, sys.argv) is undone after."""
    original_pull = getattr(start_client_internal, approval.PULL)
    monkeypatch.setattr(start_client_internal, approval.PULL, original_pull)
    monkeypatch.setattr(start_client_internal, "time", start_client_internal.time)
    for name in polling.PULL_FUNCTIONS:
        function = getattr(inflatable_utils, name)
        monkeypatch.setattr(function, "__kwdefaults__", dict(function.__kwdefaults__))
    monkeypatch.setenv("PATH", os.environ["PATH"])
    for name in (POLL_ENV, SOCKET_ENV):  # set then removed: undone after, even if unset before
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    seen = Started()

    def flower_supernode() -> None:
        seen.calls.append({
            "argv": list(sys.argv),
            "poll": os.environ.get(POLL_ENV),
            "sleep_cap": getattr(start_client_internal.time, "cap", None),
            "pull_backoff_cap": inflatable_utils.pull_objects.__kwdefaults__["backoff_cap"],
            "gated": getattr(start_client_internal, approval.PULL) is not original_pull,
            "path_head": os.environ["PATH"].split(os.pathsep)[0],
            "clientapp": shutil.which("flwr-clientapp"),
            "socket": os.environ.get(SOCKET_ENV),
            "launchers": seen.launchers,
        })  # fmt: skip

    def gate(allowed: set[str] | None) -> None:
        seen.allowed.append(allowed)
        approval.gate_supernode(allowed)

    def launcher() -> Path:
        seen.launchers += 1
        os.environ[SOCKET_ENV] = "/run/fake-launcher.sock"
        return Path("/run/fake-launcher.sock")

    monkeypatch.setattr(flower_cli, "flower_supernode", flower_supernode)
    monkeypatch.setattr(node, "gate_supernode", gate)
    monkeypatch.setattr(node, "start_launcher", launcher)
    return seen


def _app(folder: Path) -> Path:
    """The smallest folder ``flwr build`` makes a FAB of with Flame's pyproject.toml."""
    (folder / "flame").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    for name in ("flame/__init__.py", "main.py", "README.md", "LICENSE"):
        (folder / name).write_text("")
    return folder


def test_flower_starts_with_the_flags_after_the_polling_cap_the_gate_and_the_commands(
    started: Started, tmp_path: Path
) -> None:
    commands = approval.write_commands(tmp_path / "commands")
    argv = ["--insecure", "--superlink", "x:9092", "--clientappio-api-address", "0.0.0.0:9094"]
    node.supernode(argv, 0.05, False, [], commands)
    (call,) = started.calls
    assert call["argv"] == ["flower-supernode", *argv]
    assert call["poll"] == "0.05"  # the SuperExec's own poll interval
    assert call["sleep_cap"] == 0.05 and call["pull_backoff_cap"] == 0.05
    assert call["gated"] and started.allowed == [None]  # no FLAME_TRUSTED_APPS: any app
    assert call["path_head"] == str(commands)
    assert call["clientapp"] == str(commands / "flwr-clientapp")
    assert call["socket"] is None and call["launchers"] == 0  # warm off: no launcher


def test_trusted_apps_are_the_gates_hashes_with_image_the_folder_it_runs_in(
    started: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tmp_path / "app")
    monkeypatch.chdir(app)
    commands = approval.write_commands(tmp_path / "commands")
    node.supernode([], 0.25, False, ["image", "AB" * 32], commands)
    assert started.allowed == [{approval.folder_hash(app), "ab" * 32}]
    assert started.calls[0]["gated"]


def test_warm_starts_the_launcher_before_flower(started: Started, tmp_path: Path) -> None:
    node.supernode([], 0.25, True, [], approval.write_commands(tmp_path / "commands"))
    (call,) = started.calls
    assert call["launchers"] == 1 and call["socket"] == "/run/fake-launcher.sock"


def test_without_a_commands_folder_one_is_written_whose_other_programs_refuse(
    started: Started,
) -> None:
    node.supernode([], 0.25, False, [], None)
    folder = Path(started.calls[0]["path_head"])
    try:
        assert folder.name.startswith("flame-commands-")
        assert started.calls[0]["clientapp"] == str(folder / "flwr-clientapp")
        refused = subprocess.run(["flwr-serverapp", "--any"], capture_output=True, text=True)
        assert refused.returncode == 126
        assert "refused: flwr-serverapp: this region runs only ClientApp tasks" in refused.stderr
    finally:
        shutil.rmtree(folder)


def test_a_commands_folder_missing_a_program_stops_the_node_before_flower_starts(
    started: Started, tmp_path: Path
) -> None:
    commands = approval.write_commands(tmp_path / "commands")
    (commands / "flwr-agentapp").unlink()
    with pytest.raises(SystemExit, match=r"FLAME_COMMANDS_DIR=.*commands lacks flwr-agentapp"):
        node.supernode([], 0.25, True, [], commands)
    assert started.calls == [] and started.launchers == 0


def test_a_flower_the_gate_was_not_written_for_stops_the_node_before_anything_starts(
    started: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approval, "version", lambda _: "1.43.0")
    with pytest.raises(SystemExit, match=r"refused to start: Flower is 1\.43\.0"):
        node.supernode([], 0.25, True, [], approval.write_commands(tmp_path / "commands"))
    assert started.calls == [] and started.launchers == 0


NODE = r"""
import importlib, json, os, socket, sys, time
from pathlib import Path
from flame.ops import node
from flame.ops.handoff import SOCKET_ENV


def launchers():
    mine = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"flame.ops.warm" in command:
            mine.append(int(entry.name))
    return mine


def flower_supernode():
    path = Path(os.environ[SOCKET_ENV])
    deadline = time.monotonic() + 120
    while True:  # until the launcher's accept loop answers (a bad request: it hangs up)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(path))
                client.sendall(b"not a request\n")
                client.settimeout(30)
                client.recv(1)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    print(json.dumps({"argv": sys.argv, "socket": str(path), "launchers": launchers(),
                      "mode": path.stat().st_mode & 0o777}))


flower_cli = importlib.import_module("flwr.supernode.cli.flower_supernode")
flower_cli.flower_supernode = flower_supernode
node.supernode(["--insecure"], 0.25, True, [], Path(sys.argv[1]))
"""


def test_the_warm_launcher_serves_while_flower_runs_and_dies_with_the_node(
    tmp_path: Path,
) -> None:
    commands = approval.write_commands(tmp_path / "commands")
    out, err = tmp_path / "node.out", tmp_path / "node.err"
    with out.open("w") as stdout, err.open("w") as stderr:  # the launcher inherits them
        proc = subprocess.run(
            [sys.executable, "-c", NODE, str(commands)], cwd=ROOT, stdout=stdout, stderr=stderr,
            timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, err.read_text()
    seen = json.loads(out.read_text().splitlines()[0])
    socket_path = Path(seen["socket"])
    try:
        assert seen["argv"] == ["flower-supernode", "--insecure"]
        assert len(seen["launchers"]) == 1 and seen["mode"] == 0o600
        deadline = time.monotonic() + 60
        while socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not socket_path.exists() and not socket_path.parent.exists()
    finally:
        for pid in seen["launchers"]:  # only if it outlived the node (the test then fails)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
