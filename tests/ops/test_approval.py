"""The region's app approval, piece by piece (the attacks with real processes:
tests/test_security.py and tests/test_trust_boundaries.py)."""

from __future__ import annotations

import subprocess
import tomllib
import types
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.constant import TaskType
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supernode import start_client_internal
from flwr.supernode.nodestate import NodeStateFactory

from flame.ops import approval

ROOT = Path(__file__).resolve().parents[2]


def run(kind: str = TaskType.SERVER_APP, fab_hash: str = "ab" * 32) -> Run:
    empty = Run.create_empty(7)
    empty.primary_task_type, empty.fab_hash = kind, fab_hash
    return empty


def test_the_installed_flower_is_the_one_the_gate_was_written_for() -> None:
    assert approval.enforcement_problems(start_client_internal) == []


def test_a_moved_enforcement_point_stops_the_node_from_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = types.ModuleType("flwr.supernode.start_client_internal")
    fake.start_client_internal = lambda: None  # type: ignore[attr-defined]
    problems = approval.enforcement_problems(fake)
    assert any("_pull_and_store_message is gone" in p for p in problems)
    assert any("no longer calls _pull_and_store_message" in p for p in problems)
    monkeypatch.setattr(approval, "version", lambda _: "1.43.0")
    assert any("Flower is 1.43.0" in p for p in approval.enforcement_problems(fake))
    monkeypatch.setattr(approval, "PULL", "_renamed")
    monkeypatch.setattr(start_client_internal, "_renamed", lambda: None, raising=False)
    with pytest.raises(SystemExit, match="refused to start"):
        approval.gate_supernode(None)


def test_only_approved_serverapp_runs_get_a_task() -> None:
    approved = {"ab" * 32}
    assert approval.refusal(run(), approved) is None
    assert approval.refusal(run(), None) is None
    assert "is a flwr-agentapp run" in str(approval.refusal(run(TaskType.AGENT_APP), None))
    assert "is a untyped run" in str(approval.refusal(run(""), approved))
    assert "not in FLAME_TRUSTED_APPS" in str(approval.refusal(run(fab_hash="cd" * 32), approved))
    assert "do not have the run's hash" in str(approval.fab_refusal(b"bytes", run()))
    junk = b"not a FAB"
    assert "no readable pyproject.toml" in str(
        approval.fab_refusal(junk, run(fab_hash=approval.fab_hash(junk)))
    )


def test_a_run_must_name_the_app_and_version_its_fab_holds() -> None:
    """Flower builds the ClientApp's folder from the run's app id and version: a run info that
    names another (a hostile SuperLink's ``0.1.0/../..``) is refused."""
    content = build_fab_from_disk(ROOT)
    genuine = run(fab_hash=approval.fab_hash(content))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    genuine.fab_id, genuine.fab_version = "flame/flame", version
    assert approval.fab_refusal(content, genuine) is None
    genuine.fab_version = f"{version}.{genuine.fab_hash[:8]}/../../planted/flame.flame.{version}"
    assert "names app 'flame/flame' version" in str(approval.fab_refusal(content, genuine))


def test_the_node_state_creates_clientapp_tasks_only() -> None:
    state = NodeStateFactory(ObjectStoreFactory()).state()  # one per node, as in Flower
    approval.only_clientapp_tasks(state)
    approval.only_clientapp_tasks(state)  # once is enough, twice changes nothing
    assert NodeStateFactory(ObjectStoreFactory()).state() is not state
    assert state.create_task(task_type=TaskType.CLIENT_APP, run_id=1, fab_hash="a") is not None
    for kind in (TaskType.AGENT_APP, TaskType.MODEL, TaskType.SERVER_APP, "flwr-new-kind"):
        assert state.create_task(task_type=kind, run_id=1, fab_hash="a") is None
        assert state.create_task(kind, 1) is None


def test_every_other_task_program_refuses(tmp_path: Path) -> None:
    folder = approval.write_commands(tmp_path / "commands")
    names = approval.task_commands()
    assert names[0] == "flwr-clientapp" and "flwr-agentapp" in names
    assert {p.name for p in folder.iterdir()} == set(names)
    for name in names[1:]:
        done = subprocess.run([str(folder / name), "--any"], capture_output=True, text=True)
        assert done.returncode == 126
        assert (
            done.stderr.strip() == f"flame: refused: {name}: this region runs only ClientApp tasks"
        )
    assert approval.SHIM_MODULE in (folder / "flwr-clientapp").read_text()


def test_a_commands_folder_missing_a_program_is_refused(tmp_path: Path) -> None:
    folder = approval.write_commands(tmp_path / "commands")
    (folder / "flwr-agentapp").unlink()
    with pytest.raises(SystemExit, match=r"FLAME_COMMANDS_DIR=.* lacks flwr-agentapp"):
        approval.use_region_commands(folder)
