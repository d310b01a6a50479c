"""Start a local MLflow tracking server and UI on http://127.0.0.1:5000 (Ctrl-C stops it).

Lean settings (flame/ops/mlflow_server.py); runs and artifacts are kept in ./mlflow-data.
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
    from flame.ops import mlflow_server

    argv = mlflow_server.command(args.host, args.port, args.store)
    where = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {where} (data in {args.store.resolve()})", flush=True)
    os.execve(sys.executable, argv, mlflow_server.environment())


if __name__ == "__main__":
    main()
