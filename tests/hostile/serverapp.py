"""``flwr-serverapp`` as a hostile coordinator runs it: Flower's own (it pulls the run and installs
the submitted FAB, which the regions then receive and approve by hash), except that the ServerApp
it runs is ``HOSTILE_SERVERAPP``'s, not the FAB's.

The SuperLink's SuperExec starts ``flwr-serverapp`` by name for every run, so a shim first on the
SuperLink's PATH is all it takes (``deployment_env``). ``python -m tests.hostile.serverapp``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from flwr.app import Context
from flwr.server.run_serverapp import run
from flwr.serverapp import Grid, ServerApp

from tests.hostile import APP_ENV, OUT_ENV, out_folder

ROOT = Path(__file__).resolve().parents[2]


def hostile_app() -> ServerApp:
    module, _, attribute = os.environ[APP_ENV].partition(":")
    app = getattr(importlib.import_module(module), attribute or "app")
    if not isinstance(app, ServerApp):
        raise TypeError(f"{APP_ENV}={os.environ[APP_ENV]} is not a ServerApp")
    return app


def run_hostile(
    grid: Grid, context: Context, server_app_dir: str, server_app_attr: str | None = None,
    loaded_server_app: ServerApp | None = None,
) -> Context:  # fmt: skip
    """Flower's ``run`` (``flwr.server.run_serverapp``) with the hostile ServerApp."""
    del server_app_attr, loaded_server_app  # the FAB's ServerApp never runs
    return run(grid, context, server_app_dir, loaded_server_app=hostile_app())


def main() -> None:
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": sorted(os.environ)}
    (out_folder() / f"serverapp-{os.getpid()}.json").write_text(json.dumps(record, indent=1))
    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    runtime.run_ = run_hostile  # type: ignore[attr-defined]
    sys.argv[0] = "flwr-serverapp"
    flwr_serverapp()


def deployment_env(folder: Path, app: str, out: Path) -> dict[str, str]:
    """``LocalDeployment`` env whose SuperLink runs ``app`` (``module:attribute``) as the
    ServerApp of every run: a ``flwr-serverapp`` shim in ``folder``, first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "flwr-serverapp"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" -m tests.hostile.serverapp "$@"\n'
    )
    shim.chmod(0o755)
    path = os.pathsep.join([str(folder), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {"PATH": path, APP_ENV: app, OUT_ENV: str(out)}


if __name__ == "__main__":
    main()
