"""Submit the Flame app to a SuperLink (deployment runtime), stream its log, return its result.

The run config is built from the settings (environment / .env), one value per key of the app's
``[tool.flwr.app.config]`` (every run setting), so ``.env`` controls the whole run in compose.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flame.ops.certs import NODE_PUB, fingerprint, public_key
from flame.settings import FlameSettings, toml_value
from flame.settings import run_config as settings_run_config

log = logging.getLogger("flame.ops.launch")
CONNECTION = "flame"
COMPLETED = "finished:completed"


def run_config(settings: FlameSettings, app: Path) -> str:
    """``--run-config`` for every key the app declares: the whole run, as these settings say."""
    keys = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    values = settings_run_config(settings)
    return " ".join(f"{k}={toml_value(values[k])}" for k in keys if k in values)


def write_connection(
    superlink: str, root_certificates: Path | None, home: Path | None = None
) -> Path:
    """The flwr CLI's ``[superlink.flame]`` connection in ``home/config.toml`` (default
    ``$FLWR_HOME``, else ``~/.flwr``)."""
    home = home or Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    home.mkdir(parents=True, exist_ok=True)
    security = (
        f'root-certificates = "{root_certificates.resolve()}"'
        if root_certificates
        else "insecure = true"
    )
    path = home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{superlink}"\n{security}\n'
    )
    return path


def ensure_experiment(settings: FlameSettings) -> None:
    """Create the MLflow experiment once, up front, so no two processes race to create it."""
    from flame.track import tracking

    uri = tracking.tracking_uri(settings.mlflow_tracking_uri) if settings.mlflow else ""
    if not settings.mlflow or not tracking.mlflow_reachable(uri):
        return
    from mlflow.tracking import MlflowClient

    from flame.track.access import check_access

    check_access(uri)  # a refused login stops the launch here, in one line
    experiment_id = tracking.ensure_experiment(MlflowClient(uri), settings.mlflow_experiment, uri)
    log.info("MLflow experiment %r (id %s)", settings.mlflow_experiment, experiment_id)


@dataclass(frozen=True)
class RunEnd:
    """How a submitted run ended: Flower's run id (None if ``flwr run`` failed), its final
    status (or flwr's exit) and Flower's details (a failed ServerApp's exception message)."""

    run_id: int | None
    status: str
    details: str = ""


def run_status(run_id: int, env: Mapping[str, str] | None = None) -> RunEnd:
    out = subprocess.run(
        ["flwr", "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    runs = json.loads(out).get("runs", [])
    run = runs[0] if runs else {}
    return RunEnd(run_id, str(run.get("status", "unknown")), str(run.get("status-details", "")))


def register_key(
    public_key: Path, env: Mapping[str, str] | None = None, flwr: str = "flwr"
) -> subprocess.CompletedProcess[str]:
    """``flwr supernode register`` one region's public key over the ``flame`` connection."""
    return subprocess.run(
        [flwr, "supernode", "register", str(public_key), CONNECTION],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def public_keys(paths: list[Path]) -> list[Path]:
    """The public key files named by ``paths`` (files, or folders searched for ``*.pub``),
    each checked to be an OpenSSH public key and not a private one."""
    found = []
    for path in paths:
        found += sorted(path.rglob("*.pub")) if path.is_dir() else [path]
    for key in found:
        public_key(key)
    if not found:
        raise FileNotFoundError(f"no *.pub keys in {', '.join(map(str, paths))}")
    return found


def key_name(key: Path) -> str:
    """A site's ``<region>/node.pub`` is named by its folder, a ``<region>.pub`` by its stem."""
    return key.parent.name if key.name == NODE_PUB else key.stem


def register_nodes(superlink: str, keys: list[Path], root_certificates: Path) -> list[str]:
    """Register every public key in ``keys`` with the SuperLink (one already there is fine)."""
    found = public_keys(keys)
    write_connection(superlink, root_certificates)
    done = []
    for key in found:
        proc = register_key(key)
        fingerprint_ = fingerprint(key.read_bytes())
        if proc.returncode == 0:
            done.append(f"{key_name(key)}: registered {fingerprint_}")
        elif "already in use" in proc.stdout + proc.stderr:
            done.append(f"{key_name(key)}: already registered {fingerprint_}")
        else:
            raise RuntimeError(f"registering {key} failed: {(proc.stdout + proc.stderr)[-500:]}")
    return done


def launch(
    settings: FlameSettings, superlink: str, app: Path, root_certificates: Path | None
) -> int:
    if root_certificates is None:
        log.warning("connecting to the SuperLink WITHOUT TLS (insecure): trusted networks only")
    write_connection(superlink, root_certificates)
    ensure_experiment(settings)
    config = run_config(settings, app)
    log.info("Submitting %s to %s with run config: %s", app, superlink, config)
    end = submit(app, config)
    if end.run_id is None:
        log.error("flwr run against the SuperLink at %s (--superlink, FLAME_SUPERLINK) failed "
                  "(%s); Flower's reason is above", superlink, end.status)  # fmt: skip
        return 1
    log.info("Run %d ended: %s", end.run_id, end.status)
    return 0 if end.status == COMPLETED else 1


def submit(
    app: Path,
    config: str,
    extra: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    show: Callable[[str], bool] = lambda line: True,
    to: TextIO | None = None,
) -> RunEnd:
    """``flwr run`` ``app`` on the ``flame`` connection with run config ``config``, the lines
    of its log that ``show`` passes streamed to ``to`` (stdout), then its end."""
    if shutil.which("flwr", path=(env or os.environ).get("PATH")) is None:
        raise FileNotFoundError("flwr (Flower's CLI) is not on PATH: run from the venv or image")
    proc = subprocess.Popen(
        ["flwr", "run", str(app), CONNECTION, "--stream", "--run-config", config, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    run_id = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if show(line):
            (to or sys.stdout).write(line)
        found = re.search(r"run (\d+)", line, re.IGNORECASE)
        if run_id is None and found:
            run_id = int(found.group(1))
    if proc.wait() != 0 or run_id is None:
        return RunEnd(None, f"exit {proc.returncode}")
    return run_status(run_id, env)
