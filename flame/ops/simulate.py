"""Run the Flame ServerApp and ClientApp in Flower's simulation runtime from Python."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from flame.settings import load_settings

log = logging.getLogger("flame.ops.simulate")


def run(overrides: Mapping[str, object]) -> Path:
    """Simulate one federated run with the given settings; returns the run folder.

    Overrides are exported as ``FLAME_*`` variables so every simulated ClientApp (a Ray
    worker that inherits this environment) reads the same settings as the ServerApp.
    """
    for key, value in overrides.items():
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            os.environ[f"FLAME_{key.upper()}"] = text
    settings = load_settings()
    if settings.out_dir is None:
        settings = load_settings(out_dir=settings.resolved_out_dir())
        os.environ["FLAME_OUT_DIR"] = str(settings.out_dir)
    if not settings.resume and settings.out_dir is not None:
        from flame.fl.checkpoint import check_new_folder

        check_new_folder(settings.out_dir)  # before any work, not after preparing the data
    from flame.data.partition import prepare

    prepare(settings)  # once, before the ClientApps start
    from flwr.simulation import run_simulation

    # Ray's FutureWarning about GPU variables on a CPU-only run: keep today's behaviour, quietly
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

    from flame.fl.client_app import app as client_app
    from flame.fl.server_app import app as server_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=len(settings.regions),
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": max(1, min(len(settings.regions), os.cpu_count() or 1))},
            },
        )
    assert settings.out_dir is not None
    return settings.out_dir
