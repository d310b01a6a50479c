"""Run the Flame apps in Flower's simulation runtime, as ``flwr run`` does: a SuperLink of this
process's own in simulation mode (Ray, one virtual SuperNode per region), the app submitted
with the whole run as Flower's run config, its log streamed, the SuperLink stopped after."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from flame.data.partition import prepare
from flame.fl.checkpoint import check_new_folder, resume_folder
from flame.fl.protocol import BAD_INPUT, RunFailed
from flame.ops.launch import COMPLETED, RunEnd, run_config, submit
from flame.ops.local_deployment import LocalDeployment
from flame.settings import FlameSettings, SettingsError, load_settings

APP = Path(__file__).resolve().parents[2]  # the folder holding pyproject.toml: the Flower app
# Flower's lines that say nothing about this run (shown with --verbose): its note on the default
# federation size (ours is set), how to resize it, its exit-code notes, empty lines
BOILERPLATE = re.compile(
    r"default simulated SuperNodes|To change federation size|flwr federation simulation-config"
    r"|Exit Code: \d+|An unhandled exception occurred|/ref-exit-codes/|^\S*INFO \S*:\s*$|^\s*$"
)
CHAINED = ("The above exception", "During handling of the above")


class Shown:
    """Which lines of the streamed log a default run shows: not Flower's BOILERPLATE, nor the
    traceback of a ServerApp that raised (its reason ends the output in one line)."""

    def __init__(self) -> None:
        self.in_traceback = False

    def __call__(self, line: str) -> bool:
        if line.startswith("Traceback (most recent call last)") or line.startswith(CHAINED):
            self.in_traceback = True
        elif self.in_traceback and line.strip() and not line.startswith(" "):
            self.in_traceback = False  # the exception's own line: the traceback's last
            return False
        return not self.in_traceback and not BOILERPLATE.search(line)


def run(overrides: Mapping[str, object], verbose: bool = False) -> Path:
    """Simulate one federated run of the environment's settings with ``overrides``; returns
    the run folder. Raises SettingsError for settings or data the run refused, RunFailed if
    it did not complete otherwise."""
    for key, value in overrides.items():  # this process's boundary: flags become FLAME_* for
        if value is not None:  # the processes Flower starts (ServerApp, ClientApps)
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            os.environ[f"FLAME_{key.upper()}"] = text
    settings = load_settings()
    out = out_folder(settings)  # before any work, not after preparing the data
    prepare(settings.data_spec())  # once, before the ClientApps start
    env = {"FLAME_OUT_DIR": str(out), "FLAME_FLOWER_DUMPS": str(verbose).lower(),
           # Ray's FutureWarning about GPU variables on a CPU-only run: today's behaviour, quietly
           "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="flame-simulation-") as folder:
        link = LocalDeployment(Path(folder), settings, env=env, superlink_args=["--simulation"])
        with link:
            start_superlink(link)
            end = submit(
                APP, run_config(settings, APP), federation(settings), env=link.env,
                show=(lambda line: True) if verbose else Shown(), to=sys.stderr,
            )  # fmt: skip
        if end.status != COMPLETED and not end.details:  # no reason: the SuperLink's log may say
            tail = (Path(folder) / "superlink.log").read_text().splitlines()[-30:]
            print("\n".join(["The SuperLink's last lines:", *tail]), file=sys.stderr)
    if end.status != COMPLETED:
        raise failure(end)
    return out


def out_folder(settings: FlameSettings) -> Path:
    """The run's folder: with FLAME_RESUME the checkpointed run (FLAME_OUT_DIR, else the newest
    under FLAME_RUNS_DIR), else a new one."""
    if settings.resume:
        return resume_folder(settings)
    out = settings.resolved_out_dir()
    check_new_folder(out)
    return out


def start_superlink(link: LocalDeployment) -> None:
    """The simulation's SuperLink, or a RunFailed saying why it did not start, with its log's
    last line."""
    try:
        link.start_superlink()
    except (RuntimeError, TimeoutError) as err:
        said = link.last_words("superlink") or "its log is empty"
        why = str(err).split("; see ")[0]  # not the log's path: it is gone once the run ends
        raise RunFailed(f"the simulation's SuperLink did not start ({why}): {said}") from None


def failure(end: RunEnd) -> Exception:
    """What main.py reports for a run that did not complete: the ServerApp's reason (Flower's
    details hold its exception's message), as bad input (SettingsError) or a failed run."""
    reason = end.details.split("exception: ", 1)[-1].strip()
    if reason.startswith(BAD_INPUT):
        return SettingsError(reason.removeprefix(BAD_INPUT))
    return RunFailed(reason or f"Flower's run {end.run_id} ended {end.status}; its log is above")


def federation(settings: FlameSettings) -> tuple[str, ...]:
    """One virtual SuperNode per region, one CPU each, Ray given no more CPUs than there are."""
    cpus = max(1, min(len(settings.regions), os.cpu_count() or 1))
    config = (f"num-supernodes={len(settings.regions)} client-resources-num-cpus=1 "
              f"client-resources-num-gpus=0.0 init-args-num-cpus={cpus}")  # fmt: skip
    return ("--federation-config", config)
