"""The local MLflow tracking server's command line (make mlflow-ui, the tests), defined once.

Lean settings: one worker, no job runner; the runs in SQLite and the artifacts beside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "GIT_PYTHON_REFRESH": "quiet"}


def command(host: str, port: int, store: Path) -> list[str]:
    """``mlflow server`` on ``host:port`` keeping everything in ``store`` (created)."""
    store.mkdir(parents=True, exist_ok=True)
    store = store.resolve()
    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
        "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return os.environ | ENV
