"""``LocalDeployment``: the command lines and environment of the processes it starts, their logs,
the health wait and the clean-up, against a real SuperLink and SuperNode and small real servers on
loopback. The full runs on such a deployment are in test_faults, test_security and the hostile
tests; here each piece on its own."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flame.ops.certs import make_all, make_node_key
from flame.ops.local_deployment import LocalDeployment, _bin, free_port, wait_healthy
from flame.settings import load_settings

BIN = Path(sys.executable).parent
# a server answering 200 on /health and 404 elsewhere; HTTPS with a certificate and key given
HEALTH_SERVER = """
import http.server, ssl, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
if len(sys.argv) > 2:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start a process in its own session; every one still running is killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*command: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / "spawned.log").open("ab")
        started.append(subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_all(folder, [])
    return folder


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``flame keygen`` folders for ``us`` only: ``eu`` has no key."""
    folder = tmp_path_factory.mktemp("sites")
    make_node_key(folder / "us")
    return folder


def cmdline(process: subprocess.Popen[bytes]) -> list[str]:
    """The command line the process was started with (``Popen.args``: what it executed)."""
    return [str(arg) for arg in process.args]  # type: ignore[union-attr]


def environ(process: subprocess.Popen[bytes]) -> dict[str, str]:
    raw = Path(f"/proc/{process.pid}/environ").read_bytes().decode().split("\0")[:-1]
    return dict(item.split("=", 1) for item in raw)


def after(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def log_lines(path: Path, count: int) -> list[str]:
    """The log's lines once it has ``count`` (its writer is a thread that may lag the process)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {count} lines: {lines}")


def gone(pid: int) -> bool:
    """Whether ``pid`` is dead (gone, or a zombie no one reaped yet)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def health(url: str, ca: Path | None = None) -> int:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return int(response.status)


def test_free_port_is_a_loopback_port_one_can_bind() -> None:
    port = free_port()
    assert isinstance(port, int) and 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it


def test_bin_takes_this_pythons_script_first_then_path_then_the_bare_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("flwr", "only-on-path"):
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert _bin("flwr") == str(BIN / "flwr")  # not the one first on PATH
    assert _bin("only-on-path") == str(tmp_path / "only-on-path")
    assert _bin("no-such-program-anywhere") == "no-such-program-anywhere"


def test_a_deployment_with_certs_but_no_sites_is_refused(tmp_path: Path, certs: Path) -> None:
    with pytest.raises(ValueError, match=r"^a deployment with certs needs the sites' key folders"):
        LocalDeployment(tmp_path / "deployment", load_settings(), certs=certs)
    assert not (tmp_path / "deployment").exists()


def test_the_environment_has_this_pythons_bin_first_its_own_flwr_home_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_OUTSIDE", "kept")
    folder = tmp_path / "deployment"
    deployment = LocalDeployment(folder, load_settings(), env={"EXTRA": "1"})
    assert folder.is_dir()
    assert deployment.address == f"127.0.0.1:{deployment.port}"
    assert deployment.security == ["--insecure"]
    env = deployment.env
    assert env["FLWR_HOME"] == str(folder / "flwr-home")
    assert env["PATH"] == f"{BIN}{os.pathsep}{os.environ['PATH']}"
    assert env["EXTRA"] == "1" and env["FROM_OUTSIDE"] == "kept"
    assert os.environ.get("FLWR_HOME") != env["FLWR_HOME"] and "EXTRA" not in os.environ
    home = str(tmp_path / "home")  # the caller's env has the last word
    overridden = LocalDeployment(folder, load_settings(), env={"FLWR_HOME": home})
    assert overridden.env["FLWR_HOME"] == home


def test_a_spawned_process_logs_every_line_with_its_time_into_name_log_appending(
    tmp_path: Path,
) -> None:
    deployment = LocalDeployment(tmp_path / "deployment", load_settings())
    code = ("import os, sys; print(os.environ['FLWR_HOME'], flush=True); "
            "sys.stdout.buffer.write(b'bad \\xff byte\\n'); sys.stdout.flush(); "
            "print('on stderr', file=sys.stderr)")  # fmt: skip
    assert deployment._spawn("probe", [sys.executable, "-c", code]).wait(timeout=30) == 0
    log = tmp_path / "deployment" / "probe.log"
    lines = log_lines(log, 3)
    stamped = [re.fullmatch(r"(\d+\.\d{3}) (.*)", line) for line in lines]
    assert all(stamped), lines
    assert [m.group(2) for m in stamped if m] == [
        str(tmp_path / "deployment" / "flwr-home"), "bad \ufffd byte", "on stderr"
    ]  # fmt: skip
    assert deployment._spawn("probe", [sys.executable, "-c", "print('again')"]).wait(30) == 0
    assert log_lines(log, 4)[:3] == lines and log_lines(log, 4)[3].endswith(" again")


def test_wait_healthy_returns_once_health_answers_and_a_404_is_not_healthy(
    tmp_path: Path, spawn: Spawn
) -> None:
    port = free_port()
    server = spawn(sys.executable, "-c", HEALTH_SERVER, str(port))
    wait_healthy(f"http://127.0.0.1:{port}/health", server, tmp_path / "server.log")
    assert server.poll() is None and health(f"http://127.0.0.1:{port}/health") == 200
    url = f"http://127.0.0.1:{port}/missing"  # the server answers, but not 200
    with pytest.raises(TimeoutError, match="/missing not healthy after 1 s"):
        wait_healthy(url, server, tmp_path / "server.log", timeout=1)


def test_wait_healthy_names_the_url_exit_code_and_log_of_a_process_that_died(
    tmp_path: Path, spawn: Spawn
) -> None:
    process = spawn(sys.executable, "-c", "import sys; sys.exit(3)")
    url, log = f"http://127.0.0.1:{free_port()}/health", tmp_path / "x.log"
    with pytest.raises(RuntimeError) as died:
        wait_healthy(url, process, log)
    assert str(died.value) == f"{url}: process exited (3); see {log}"


def test_wait_healthy_times_out_naming_the_url_and_log(tmp_path: Path, spawn: Spawn) -> None:
    process = spawn("sleep", "60")  # alive, never listening
    url, log = f"http://127.0.0.1:{free_port()}/health", tmp_path / "x.log"
    with pytest.raises(TimeoutError) as late:
        wait_healthy(url, process, log, timeout=1.0)
    assert str(late.value) == f"{url} not healthy after 1 s; see {log}"
    assert process.poll() is None  # waiting never kills it


def test_wait_healthy_verifies_tls_against_the_given_ca(
    tmp_path: Path, spawn: Spawn, certs: Path
) -> None:
    port = free_port()
    server = spawn(sys.executable, "-c", HEALTH_SERVER, str(port),
                   str(certs / "server.pem"), str(certs / "server.key"))  # fmt: skip
    url = f"https://127.0.0.1:{port}/health"
    wait_healthy(url, server, tmp_path / "server.log", ca=certs / "ca.crt")
    with pytest.raises(TimeoutError, match="not healthy"):  # the system's CAs do not know it
        wait_healthy(url, server, tmp_path / "server.log", timeout=1)


def test_an_insecure_superlink_and_node_start_healthy_with_their_command_lines(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "deployment"
    with LocalDeployment(
        folder, load_settings(), superlink_args=["--isolation", "subprocess"],
        supernode_args=["--max-retries", "5"],
    ) as deployment:  # fmt: skip
        deployment.start_superlink()
        assert deployment.superlink is not None
        link = cmdline(deployment.superlink)
        assert link == [
            _bin("flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(deployment.port), "--database", str(folder / "state.db"),
            "--disable-runtime-dependency-installation", "--isolation", "subprocess",
        ]  # fmt: skip
        assert environ(deployment.superlink)["FLWR_HOME"] == str(folder / "flwr-home")
        assert health(f"http://{deployment.address}/health") == 200
        assert (folder / "state.db").exists()
        assert (folder / "flwr-home" / "config.toml").read_text() == (
            '[superlink]\ndefault = "flame"\n\n'
            f'[superlink.flame]\naddress = "{deployment.address}"\ninsecure = true\n'
        )
        node = deployment.start_node(1)
        assert deployment.nodes == {"eu": node} and node.poll() is None
        command = cmdline(node)
        assert command[:5] == [sys.executable, "-m", "flame.cli", "supernode", "--insecure"]
        assert after(command, "--superlink") == deployment.address
        assert after(command, "--node-config") == "partition-id=1 num-partitions=2"
        assert command[-2:] == ["--max-retries", "5"]
        assert health(f"http://127.0.0.1:{after(command, '--port')}/health") == 200
        launch = deployment.submit(tmp_path / "app")
        assert cmdline(launch) == [sys.executable, "-m", "flame.cli", "launch",
                                   "--app", str(tmp_path / "app"),
                                   "--superlink", deployment.address]  # fmt: skip
        deployment.kill(launch)
    assert deployment.superlink.returncode == -signal.SIGKILL
    assert node.returncode == -signal.SIGKILL
    with pytest.raises(urllib.error.URLError):
        health(f"http://{deployment.address}/health")
    assert log_lines(folder / "superlink.log", 1)


def test_a_tls_superlink_and_node_get_the_certs_and_the_regions_key(
    tmp_path: Path, certs: Path, sites: Path
) -> None:
    folder, ca = tmp_path / "deployment", certs / "ca.crt"
    with LocalDeployment(folder, load_settings(), certs=certs, sites=sites) as deployment:
        assert deployment.security == []
        deployment.start_superlink()
        assert deployment.superlink is not None
        link = cmdline(deployment.superlink)
        assert "--insecure" not in link
        assert link[-7:] == ["--ssl-ca-certfile", str(ca), "--ssl-certfile",
                             str(certs / "server.pem"), "--ssl-keyfile",
                             str(certs / "server.key"), "--enable-supernode-auth"]  # fmt: skip
        assert health(f"https://{deployment.address}/health", ca=ca) == 200
        with pytest.raises(OSError):  # no plain HTTP beside it
            health(f"http://{deployment.address}/health")
        config = (folder / "flwr-home" / "config.toml").read_text()
        assert f'root-certificates = "{ca.resolve()}"' in config and "insecure" not in config
        us = cmdline(deployment.start_node(0, wait=False))
        assert "--insecure" not in us
        key = str(sites / "us" / "node.key")
        assert us[-4:] == ["--root-certificates", str(ca), "--auth-supernode-private-key", key]
        extra = ["--root-certificates", str(ca)]  # given: it replaces the region's key
        eu = cmdline(deployment.start_node(1, extra=extra, wait=False))
        assert eu[-2:] == extra and "--auth-supernode-private-key" not in eu
        assert set(deployment.nodes) == {"us", "eu"}
        launch = deployment.submit(tmp_path / "app")
        assert cmdline(launch)[-4:] == ["--superlink", deployment.address,
                                        "--root-certificates", str(ca)]  # fmt: skip
        deployment.kill(launch)


def test_start_registers_and_starts_each_region_in_turn_and_names_the_one_that_failed(
    tmp_path: Path, certs: Path, sites: Path
) -> None:
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), certs=certs, sites=sites) as deployment:
        with pytest.raises(RuntimeError, match=r"^registering eu failed: ") as failed:
            deployment.start()
        assert "Public key file" in str(failed.value) and "\n" not in str(failed.value)
        assert list(deployment.nodes) == ["us"]  # registered and started before eu was tried
        assert deployment.nodes["us"].poll() is None
        listed = subprocess.run(
            [_bin("flwr"), "supernode", "list", "flame", "--format", "json"],
            env=deployment.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0 and listed.stdout.count('"node-id"') == 1, listed


def test_kill_ends_the_whole_process_group_and_leaves_ended_processes_alone(
    tmp_path: Path,
) -> None:
    deployment = LocalDeployment(tmp_path / "deployment", load_settings())
    tree = deployment._spawn("tree", ["sh", "-c", "sleep 300 & echo $!; wait"])
    child = int(log_lines(tmp_path / "deployment" / "tree.log", 1)[0].split()[1])
    assert os.getpgid(tree.pid) == tree.pid == os.getpgid(child)  # its own group, with the child
    deployment.kill(tree)
    assert tree.returncode == -signal.SIGKILL
    assert gone(child)
    deployment.kill(tree)  # already ended: nothing to do, no error
    deployment.kill(None)
    done = deployment._spawn("done", ["true"])
    done.wait(timeout=30)
    deployment.kill(done)
    assert done.returncode == 0


def test_leaving_the_block_kills_the_superlink_and_every_node_even_on_an_error(
    tmp_path: Path,
) -> None:
    deployment = LocalDeployment(tmp_path / "deployment", load_settings())
    with pytest.raises(KeyError), deployment:
        deployment.superlink = deployment._spawn("superlink", ["sleep", "300"])
        deployment.nodes = {r: deployment._spawn(f"supernode-{r}", ["sleep", "300"])
                            for r in ("us", "eu")}  # fmt: skip
        raise KeyError("a test failed mid-way")
    processes = [deployment.superlink, *deployment.nodes.values()]
    assert [p.returncode for p in processes if p] == [-signal.SIGKILL] * 3
