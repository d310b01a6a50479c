"""A real Flower deployment on this machine, without Docker: one SuperLink and one SuperNode per
region as separate processes, talking HTTP on loopback. Used by the benchmarks and the
fault-tolerance tests (kill a SuperNode, restart the SuperLink) and handy for debugging.

    with LocalDeployment(folder, settings) as deployment:
        deployment.start()
        code = deployment.submit(Path(".")).wait()  # `flame launch`: 0 = finished:completed
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from flame.ops.launch import register_key, write_connection
from flame.settings import FlameSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or name)


class LocalDeployment:
    def __init__(
        self,
        folder: Path,
        settings: FlameSettings,
        env: dict[str, str] | None = None,
        supernode_args: list[str] | None = None,
        superlink_args: list[str] | None = None,
        certs: Path | None = None,
        sites: Path | None = None,
    ) -> None:
        """``certs``: a ``flame certs`` folder: TLS on every link and SuperNode authentication,
        with ``sites``: one ``flame keygen`` folder per region (``sites/<region>/node.key``),
        whose ``node.pub`` is registered before its node starts. Without: insecure HTTP."""
        if certs is not None and sites is None:
            raise ValueError("a deployment with certs needs the sites' key folders (sites)")
        self.folder, self.settings, self.sites = folder, settings, sites
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Flower's processes start `flower-superexec` / `flwr` by name: this Python's bin first
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = os.environ | {"FLWR_HOME": str(folder / "flwr-home"), "PATH": path}
        self.env |= env or {}
        self.certs = certs
        self.loggers: dict[str, tuple[subprocess.Popen[bytes], threading.Thread]] = {}
        self.security = ["--insecure"] if certs is None else []
        self.supernode_args = supernode_args or []
        self.superlink_args = superlink_args or []
        self.superlink: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        """Start a process; its output goes to ``<name>.log``, each line prefixed with the time."""
        process = subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        logger = threading.Thread(
            target=_stamp, args=(process, self.folder / f"{name}.log"), daemon=True
        )
        logger.start()
        self.loggers[name] = (process, logger)
        return process

    def last_words(self, name: str) -> str:
        """The last error line process ``name`` wrote to its log, else its last line (all of
        the log, once it has exited)."""
        process, logger = self.loggers[name]
        if process.poll() is not None:
            logger.join(timeout=5)
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Flower's colours
        lines = [line.split(" ", 1)[-1].strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "Error" in line]
        return (errors or lines or [""])[-1]

    def start_superlink(self) -> None:
        command = [
            _bin("flower-superlink"), *self.security, "--host", "127.0.0.1",
            "--port", str(self.port), "--database", str(self.folder / "state.db"),
            "--disable-runtime-dependency-installation", *self.superlink_args,
        ]  # fmt: skip
        if self.certs is not None:
            command += [
                "--ssl-ca-certfile", str(self.certs / "ca.crt"),
                "--ssl-certfile", str(self.certs / "server.pem"),
                "--ssl-keyfile", str(self.certs / "server.key"),
                "--enable-supernode-auth",
            ]  # fmt: skip
        self.superlink = self._spawn("superlink", command)
        scheme = "http" if self.certs is None else "https"
        wait_healthy(
            f"{scheme}://{self.address}/health", self.superlink, self.folder / "superlink.log",
            ca=self.certs / "ca.crt" if self.certs else None,
        )  # fmt: skip
        self._write_connection()

    def _write_connection(self) -> None:
        """The flwr CLI's connection ``[superlink.flame]`` in this deployment's FLWR_HOME."""
        ca = self.certs / "ca.crt" if self.certs is not None else None
        write_connection(self.address, ca, Path(self.env["FLWR_HOME"]))

    def register(self, public_key: Path) -> subprocess.CompletedProcess[str]:
        """``flwr supernode register`` a region's public key with the SuperLink."""
        return register_key(public_key, self.env, _bin("flwr"))

    def start_node(
        self, index: int, extra: list[str] | None = None, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        region = self.settings.regions[index]
        port = free_port()
        if self.certs is not None and self.sites is not None and extra is None:
            key = self.sites / region / "node.key"
            extra = ["--root-certificates", str(self.certs / "ca.crt"),
                     "--auth-supernode-private-key", str(key)]  # fmt: skip
        command = [
            sys.executable, "-m", "flame.cli", "supernode", *self.security,
            "--superlink", self.address,
            "--host", "127.0.0.1", "--port", str(port),
            "--node-config", f"partition-id={index} num-partitions={len(self.settings.regions)}",
            *self.supernode_args, *(extra or []),
        ]  # fmt: skip
        node = self.nodes[region] = self._spawn(f"supernode-{region}", command)
        if wait:
            log = self.folder / f"supernode-{region}.log"
            wait_healthy(f"http://127.0.0.1:{port}/health", node, log)
        return node

    def start(self) -> None:
        self.start_superlink()
        for index, region in enumerate(self.settings.regions):
            if self.sites is not None:
                done = self.register(self.sites / region / "node.pub")
                if done.returncode != 0:
                    said = " ".join((done.stderr or done.stdout).split())  # flwr's box, one line
                    raise RuntimeError(f"registering {region} failed: {said}")
            self.start_node(index)

    def kill(self, process: subprocess.Popen[bytes] | None) -> None:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def submit(self, app: Path) -> subprocess.Popen[bytes]:
        """``flame launch`` against this SuperLink (run config from the FLAME_* environment)."""
        command = [
            sys.executable, "-m", "flame.cli", "launch", "--app", str(app),
            "--superlink", self.address,
        ]  # fmt: skip
        if self.certs is not None:
            command += ["--root-certificates", str(self.certs / "ca.crt")]
        return self._spawn("launch", command)

    def close(self) -> None:
        for node in self.nodes.values():
            self.kill(node)
        self.kill(self.superlink)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _stamp(process: subprocess.Popen[bytes], path: Path) -> None:
    assert process.stdout is not None
    with path.open("a") as log:
        for line in process.stdout:
            log.write(f"{time.time():.3f} {line.decode(errors='replace')}")
            log.flush()


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 60,
    ca: Path | None = None,
) -> None:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout:g} s; see {log}")
