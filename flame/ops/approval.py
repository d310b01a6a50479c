"""Each region runs only code it approved (``FLAME_TRUSTED_APPS``), and only as a ClientApp.

A submitted run is a FAB: Python code that a region's task processes install and import, next
to the region's data. The check is made three times, each before anything is started:
1. In the SuperNode process (``gate_supernode``), when a message of a run it does not know
   arrives: the run must be a ServerApp run (Flower hands other runs, such as an AgentApp run,
   to other programs) whose FAB hash the region approved, and the FAB's bytes must have that
   hash. Otherwise no task is created and nothing is fetched or started: one line in the
   region's log and an error reply to the server. The node's state creates no task of any type
   other than a ClientApp, whoever asks.
2. Where the SuperNode's SuperExec starts task programs by name (``use_region_commands``):
   ``flwr-clientapp`` is Flame's, every other task program Flower knows (``flwr-agentapp``,
   ``flwr-serverapp``, ...) is a stub that refuses.
3. In the ClientApp process (``guard``): the FAB's bytes are checked again and installed into
   a fresh folder of that task's own, so no install folder an earlier task left behind is
   ever loaded.
The first two replace parts of Flower that are not public API: ``FLOWER_VERSION`` is the
version they were written against; ``flame supernode`` refuses to start on any other, or if
the replaced functions are no longer where they were.

Approved hashes: ``FLAME_TRUSTED_APPS``, comma-separated; ``image`` stands for the FAB that
``flwr build`` makes of the app folder this process runs in (in the compose image: ``/app``,
the code the region built its own image from). ``flame fab-hash [DIR]`` prints a folder's hash.
Empty: any app runs (the region trusts whoever can submit runs).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flame.log import setup_logging

if TYPE_CHECKING:
    from flwr.supercore.run import Run

log = logging.getLogger("flame.ops.approval")
IMAGE = "image"
SHIM_MODULE = "flame.ops.approval"
APP_HASH_ENV = "FLAME_APP_HASH"
FLOWER_VERSION = "1.42.0"  # the version gate_supernode and guard were written against
CLIENTAPP = "flwr-clientapp"
PULL = "_pull_and_store_message"
PULL_ARGUMENTS = {"state", "object_store", "receive", "get_run", "get_fab"}


class UntrustedAppError(RuntimeError):
    """A task's FAB is not one this region approved."""


def fab_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def folder_hash(app: Path) -> str:
    """The hash of the FAB ``flwr build`` / ``flwr run`` makes of ``app``."""
    from flwr.cli.build import build_fab_from_disk

    if not (app / "pyproject.toml").exists():
        raise FileNotFoundError(f"{app} holds no pyproject.toml: not a Flower app folder")
    return fab_hash(build_fab_from_disk(app))


@functools.cache
def image_hash(app: Path) -> str:
    """``folder_hash`` of the app folder this node runs, once per process: the warm launcher
    computes it before it forks any task (0.9 s in the image, most of it imports), so ``image``
    means the folder as it was when the node started."""
    return folder_hash(app)


def approved(trusted: Iterable[str], app: Path) -> set[str]:
    """The approved hashes, with ``image`` replaced by the hash of ``app``."""
    return {image_hash(app.resolve()) if t == IMAGE else t.lower() for t in trusted}


def check(content: bytes, allowed: set[str]) -> None:
    digest = fab_hash(content)
    if digest not in allowed:
        message = f"refused: app {digest[:16]}… is not in FLAME_TRUSTED_APPS of this region"
        log.error(message)
        raise UntrustedAppError(message)


def guard(allowed: set[str] | None, home: Path) -> None:
    """Make Flower's ClientApp runner check every FAB before it installs it (``allowed`` None:
    any app), install it into ``home``, a fresh folder of this task's own (Flower would
    reuse any folder already at the app's install path), and load the ClientApp from the
    folder it just installed (Flower would build that path from the run's id and version,
    which the SuperLink sends); and tell the task which app it runs (``FLAME_APP_HASH``, for
    the region's privacy ledger)."""
    from flwr.supernode.runtime import run_clientapp

    install: Callable[..., Any] = run_clientapp.install_from_fab
    loader: Callable[..., Any] = run_clientapp.get_load_client_app_fn
    installed: list[Path] = []

    def checked_install(content: bytes, *args: object, **kwargs: object) -> Any:
        if allowed is not None:
            check(content, allowed)
        if any(home.iterdir()):
            raise UntrustedAppError(f"refused: the task's fresh app folder {home} is not empty")
        # this task process's own settings: Flower installs to and loads from FLWR_HOME/apps
        os.environ["FLWR_HOME"] = str(home)
        os.environ[APP_HASH_ENV] = fab_hash(content)
        path = install(content, *args, **kwargs)
        installed.append(Path(path))
        return path

    def installed_loader(default_app_ref: str, app_path: str | None, multi_app: bool) -> Any:
        if len(installed) != 1:
            raise UntrustedAppError("refused: the task has no single checked FAB to load")
        return loader(default_app_ref, str(installed[0]), multi_app)

    run_clientapp.install_from_fab = checked_install  # type: ignore[assignment]
    run_clientapp.get_load_client_app_fn = installed_loader  # type: ignore[assignment]


def refusal(run: Run, allowed: set[str] | None) -> str | None:
    """Why this region runs no task of ``run``; None: it may run its ClientApp."""
    from flwr.supercore.constant import TaskType

    if run.primary_task_type != TaskType.SERVER_APP:
        kind = run.primary_task_type or "untyped"
        return f"refused: run {run.run_id} is a {kind} run; this region runs only ClientApps"
    if allowed is not None and run.fab_hash.lower() not in allowed:
        return (
            f"refused: run {run.run_id}'s app {run.fab_hash[:16]}… is not in "
            "FLAME_TRUSTED_APPS of this region"
        )
    return None


def fab_refusal(content: bytes, run: Run) -> str | None:
    """Why the FAB's bytes do not belong to ``run``: another hash, or another app id or version
    than the run names (Flower builds the ClientApp's folder from the run's)."""
    from flwr.common.config import get_fab_config, get_metadata_from_config

    if fab_hash(content) != run.fab_hash.lower():
        return f"refused: run {run.run_id}'s FAB bytes do not have the run's hash"
    try:
        own = get_metadata_from_config(get_fab_config(content))
    except Exception as err:  # noqa: BLE001 - whatever is wrong with a FAB, it is refused
        return f"refused: run {run.run_id}'s FAB has no readable pyproject.toml ({err})"
    if own != (run.fab_id, run.fab_version):
        return (
            f"refused: run {run.run_id} names app {run.fab_id!r} version "
            f"{run.fab_version!r}, its FAB is {own[0]!r} version {own[1]!r}"
        )
    return None


def enforcement_problems(module: types.ModuleType) -> list[str]:
    """What no longer holds in this Flower for ``gate_supernode`` (empty: it applies)."""
    problems = []
    if (found := version("flwr")) != FLOWER_VERSION:
        problems.append(f"Flower is {found}, the approval was written against {FLOWER_VERSION}")
    pull = getattr(module, PULL, None)
    if pull is None or not PULL_ARGUMENTS <= set(inspect.signature(pull).parameters):
        problems.append(f"{module.__name__}.{PULL} is gone or takes other arguments")
    start = getattr(module, "start_client_internal", None)
    if start is None or PULL not in start.__code__.co_names:
        problems.append(f"{module.__name__}.start_client_internal no longer calls {PULL}")
    if not callable(getattr(module, "_insert_message", None)):
        problems.append(f"{module.__name__}._insert_message is gone")
    from flwr.supernode.runtime import run_clientapp

    for name in ("install_from_fab", "get_load_client_app_fn"):
        if not callable(getattr(run_clientapp, name, None)):
            problems.append(f"{run_clientapp.__name__}.{name} is gone")
    return problems


def only_clientapp_tasks(state: Any) -> None:
    """The SuperNode's state creates ClientApp tasks only, whoever asks (the message loop, or
    a task through the runtime API)."""
    from flwr.supercore.constant import TaskType

    if getattr(state, "_flame_only_clientapps", False):
        return
    create = state.create_task

    def checked(*args: Any, **kwargs: Any) -> int | None:
        kind = kwargs.get("task_type", args[0] if args else None)
        if kind != TaskType.CLIENT_APP:
            log.error("refused: a %s task; this region runs only ClientApps", kind)
            return None
        return create(*args, **kwargs)  # type: ignore[no-any-return]

    state.create_task = checked
    state._flame_only_clientapps = True


def gate_supernode(allowed: set[str] | None) -> None:
    """In the SuperNode process: a message of a run this node does not know yet is refused
    (an error reply, no task, no FAB install) unless ``refusal`` and ``fab_refusal`` pass;
    the run and FAB Flower then stores are the ones checked. ``allowed`` None: any app, but
    still ClientApps only."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode
    from flwr.supernode import start_client_internal as node

    if problems := enforcement_problems(node):
        raise SystemExit(f"flame supernode: refused to start: {'; '.join(problems)}")
    pull = getattr(node, PULL)

    def gated(**kwargs: Any) -> int | None:
        state, store = kwargs["state"], kwargs["object_store"]
        receive, get_run, get_fab = kwargs["receive"], kwargs["get_run"], kwargs["get_fab"]
        only_clientapp_tasks(state)
        checked_runs: dict[int, Run] = {}
        checked_fabs: dict[str, Any] = {}
        refused: list[int] = []

        def checked_receive() -> Any:
            if (got := receive()) is None:
                return None
            message = got[0]
            run_id = message.metadata.run_id
            if state.get_run(run_id) is not None:  # checked when its first message came
                return got
            run = get_run(run_id)
            reason = refusal(run, allowed)
            if reason is None:
                fab = get_fab(run.fab_hash, run_id)
                if (reason := fab_refusal(fab.content, run)) is None:
                    checked_runs[run_id], checked_fabs[run.fab_hash] = run, fab
                    return got
            log.error(reason)
            reply = Message(Error(ErrorCode.INVALID_FAB, reason), reply_to=message)
            node._insert_message(reply, state, store)
            refused.append(run_id)
            return None

        def checked_run(run_id: int) -> Run:
            return checked_runs.pop(run_id)  # KeyError: an unchecked run, never stored

        def checked_fab(fab_hash: str, run_id: int) -> Any:
            return checked_fabs.pop(fab_hash)

        kwargs.update(receive=checked_receive, get_run=checked_run, get_fab=checked_fab)
        run_id = pull(**kwargs)
        return refused[0] if run_id is None and refused else run_id  # then push the error

    setattr(node, PULL, gated)


def task_commands() -> list[str]:
    """Every task program Flower may start by name (``flwr-clientapp`` first)."""
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND

    return [CLIENTAPP, *sorted(set(TASK_TYPE_TO_COMMAND.values()) - {CLIENTAPP})]


def write_commands(folder: Path) -> Path:
    """Flame's task programs into ``folder``: its ``flwr-clientapp`` and, for every other task
    program Flower knows, a stub that refuses. Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in task_commands():
        if name == CLIENTAPP:
            text = f'#!/bin/sh\nexec "{sys.executable}" -m {SHIM_MODULE} "$@"\n'
        else:
            line = f"flame: refused: {name}: this region runs only ClientApp tasks"
            text = f"#!/bin/sh\necho '{line}' >&2\nexit 126\n"
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def use_region_commands(folder: Path | None) -> Path:
    """For this process's children: Flame's task programs first on PATH. ``folder``: a
    ``write_commands`` folder made beforehand (``FLAME_COMMANDS_DIR``; the image bakes one,
    since its /tmp cannot run programs); None: written now into a fresh temporary folder."""
    if folder is None:
        folder = write_commands(Path(tempfile.mkdtemp(prefix="flame-commands-")))
    missing = [name for name in task_commands() if not (folder / name).is_file()]
    if missing:
        raise SystemExit(
            f"FLAME_COMMANDS_DIR={folder} lacks {', '.join(missing)}: make it with "
            "`python -m flame.ops.approval --write-commands DIR`"
        )
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return folder


def clientapp_main() -> None:
    """Flower's ``flwr-clientapp`` with the region's approval check."""
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    from flame.fl.polling import cap_pull_backoff
    from flame.settings import load_settings

    setup_logging()
    settings = load_settings()
    cap_pull_backoff(settings.poll_interval)
    trusted = settings.trusted_apps
    home = Path(tempfile.mkdtemp(prefix="flame-task-"))
    guard(approved(trusted, Path.cwd()) if trusted else None, home)
    sys.argv[0] = CLIENTAPP
    try:
        flwr_clientapp()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def shim_main() -> None:
    """``flwr-clientapp`` as the SuperNode calls it: handed to the warm launcher when one runs
    (``flame.ops.warm``), else run here."""
    from flame.ops.handoff import SOCKET_ENV, delegate

    path = os.environ.get(SOCKET_ENV)
    if path and delegate(path, sys.argv[1:]) is not None:
        return
    if path:
        log.warning("warm ClientApp launcher at %s is down: this task starts cold", path)
    clientapp_main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-commands"] and len(sys.argv) == 3:
        write_commands(Path(sys.argv[2]))
    else:
        shim_main()
