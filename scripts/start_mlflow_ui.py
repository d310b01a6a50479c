"""Start a local MLflow tracking server and UI on http://127.0.0.1:5000 (Ctrl-C stops it).

Lean settings (one worker, no job runner); runs and artifacts are kept in ./mlflow-data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--store", type=Path, default=Path("mlflow-data"))
    args = p.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    store = args.store.resolve()
    os.environ |= {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "GIT_PYTHON_REFRESH": "quiet"}
    print(f"MLflow UI on http://{args.host}:{args.port} (data in {store})", flush=True)
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
        "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
