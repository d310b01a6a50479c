from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flame.ops.local_deployment import free_port, wait_healthy
from flame.ops.mlflow_server import command as mlflow_command
from flame.ops.mlflow_server import environment as mlflow_environment
from flame.settings import FlameSettings, _region_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's .env or FLAME_* variables, nor write into the repo."""
    for key in list(os.environ):
        if key.startswith("FLAME_") and key != "FLAME_REAL_DATA_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setitem(FlameSettings.model_config, "env_file", None)
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLAME_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FLAME_STATE_DIR", str(tmp_path / "state"))  # each region's secret, ledger
    monkeypatch.setenv("FLAME_MLFLOW", "false")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("FLAME_PRETRAIN_ROWS", "20000")  # the warm start, small: fast tests
    _region_settings.cache_clear()  # read once per process in production; per test here


@pytest.fixture
def real_dir() -> Path:
    """The real PaySim samples (FLAME_REAL_DATA_DIR, default ../shared/data/paysim-real)."""
    path = Path(os.environ.get("FLAME_REAL_DATA_DIR", "../shared/data/paysim-real"))
    path = path if path.is_absolute() else ROOT / path
    if not (path / "random-sample-3000.csv").exists():
        pytest.skip(f"real PaySim samples not found at {path}: set FLAME_REAL_DATA_DIR")
    return path


class MlflowServer:
    """A real MLflow tracking server on a loopback port; can be stopped and started again."""

    def __init__(
        self, store: Path, wrapper: list[str] | None = None, log: Path | None = None
    ) -> None:
        """``wrapper``: a command that runs the server's command line given after it (``flame
        mlflow-server ...``); ``log``: the process's stdout and stderr go there."""
        self.port, self.store, self.wrapper, self.log = free_port(), store, wrapper, log
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        store.mkdir(parents=True, exist_ok=True)

    def start(self) -> MlflowServer:
        server = mlflow_command("127.0.0.1", self.port, self.store, auth=self.wrapper is not None)
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [*(self.wrapper or []), *server], env=mlflow_environment(), stdout=out,
            stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_healthy(f"{self.uri}/health", self.proc, self.store, timeout=90)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server on a free loopback port."""
    server = MlflowServer(tmp_path / "mlflow").start()
    yield server.uri
    server.stop()


class RedisServer:
    """A real redis-server (Debian's, on PATH) on a loopback port, with an append-only file in
    ``folder``; can be stopped and started again on the same data."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH: `make test` installs it (apt-get)")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=(self.folder / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real Redis server on a free loopback port."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
