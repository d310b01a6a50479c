"""Each region runs only code it approved (``FLAME_TRUSTED_APPS``).

A submitted run is a FAB: Python code that each region's ClientApp process installs and imports,
next to the region's data. Flower's SuperNode starts a ``flower-superexec`` process, which starts
``flwr-clientapp`` by name for every task. ``flame supernode`` puts its own ``flwr-clientapp``
first on the PATH its children inherit: Flower's own ClientApp process (``python -m
flame.ops.approval``) with one check added before the FAB is installed or any of its code
imported: the SHA-256 of the FAB's bytes (Flower's FAB hash) must be one the region approved.
Otherwise the task fails with one line in the region's log and an error reply to the server.

Approved hashes: ``FLAME_TRUSTED_APPS``, comma-separated; ``image`` stands for the FAB that
``flwr build`` makes of the app folder this process runs in (in the compose image: ``/app``,
the code the region built its own image from). ``flame fab-hash [DIR]`` prints a folder's hash.
Empty: any app runs (the region trusts whoever can submit runs).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("flame.ops.approval")
IMAGE = "image"
SHIM_MODULE = "flame.ops.approval"
APP_HASH_ENV = "FLAME_APP_HASH"


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


def guard(allowed: set[str] | None) -> None:
    """Make Flower's ClientApp runner check every FAB before it installs it (``allowed`` None:
    any app), and tell the task which app it runs (``FLAME_APP_HASH``, for the region's
    privacy ledger)."""
    from flwr.supernode.runtime import run_clientapp

    install: Callable[..., object] = run_clientapp.install_from_fab

    def checked_install(content: bytes, *args: object, **kwargs: object) -> object:
        if allowed is not None:
            check(content, allowed)
        os.environ[APP_HASH_ENV] = fab_hash(content)  # this task process's own setting
        return install(content, *args, **kwargs)

    run_clientapp.install_from_fab = checked_install  # type: ignore[assignment]


def use_flame_clientapp() -> Path:
    """For this process's children: ``flwr-clientapp`` is Flame's checked one (a shim in a
    fresh folder put first on PATH, unless the one on PATH already is: the image bakes one in,
    since its /tmp is not executable). Returns the shim."""
    current = shutil.which("flwr-clientapp")
    if current is not None and SHIM_MODULE in Path(current).read_text(errors="replace")[:500]:
        return Path(current)
    folder = Path(tempfile.mkdtemp(prefix="flame-clientapp-"))
    shim = folder / "flwr-clientapp"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {SHIM_MODULE} "$@"\n')
    shim.chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return shim


def clientapp_main() -> None:
    """Flower's ``flwr-clientapp`` with the region's approval check."""
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    from flame.log import setup_logging
    from flame.ops.polling import cap_pull_backoff
    from flame.settings import load_settings

    setup_logging()
    settings = load_settings()
    cap_pull_backoff(settings.poll_interval)
    trusted = settings.trusted_apps
    guard(approved(trusted, Path.cwd()) if trusted else None)
    sys.argv[0] = "flwr-clientapp"
    flwr_clientapp()


def shim_main() -> None:
    """``flwr-clientapp`` as the SuperNode calls it: handed to the warm launcher when one runs
    (``flame.ops.warm``), else run here."""
    from flame.ops.warm import SOCKET_ENV, delegate

    path = os.environ.get(SOCKET_ENV)
    if path and delegate(path, sys.argv[1:]) is not None:
        return
    if path:
        log.warning("warm ClientApp launcher at %s is down: this task starts cold", path)
    clientapp_main()


if __name__ == "__main__":
    shim_main()
