"""Handing a ClientApp task to the warm launcher: one JSON line (command line, environment,
folder) in, the child's pid out; a launcher that is down, silent or garbled means None (the
task starts cold), never an exception or a hung SuperNode."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flame.ops.handoff import MAX_REQUEST, SOCKET_ENV, delegate, read_line

Reply = Callable[[socket.socket, bytes], None]


class Launcher:
    """A stand-in launcher on a Unix socket: takes one connection, reads the request line and
    answers with ``reply``."""

    def __init__(self, path: Path, reply: Reply) -> None:
        self.path, self.reply = path, reply
        self.requests: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            request = read_line(connection)
            self.requests.append(request)
            self.reply(connection, request)

    def close(self) -> None:
        self.thread.join(timeout=30)
        self.server.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Callable[[Reply], Launcher]]:
    started: list[Launcher] = []

    def start(reply: Reply) -> Launcher:
        started.append(Launcher(tmp_path / "launcher.sock", reply))
        return started[-1]

    yield start
    for one in started:
        one.close()


def test_the_request_is_one_json_line_of_argv_env_and_cwd_and_the_reply_is_the_pid(
    launcher: Callable[[Reply], Launcher], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARK", "région 1 = ok")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    stub = launcher(lambda connection, _: connection.sendall(b"4242\n"))
    argv = ["--token", "7", "--flwr-dir", "/x y"]
    assert delegate(str(stub.path), argv) == 4242
    stub.close()
    (line,) = stub.requests
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = json.loads(line)
    assert request == {"argv": argv, "env": request["env"], "cwd": str(work)}
    assert request["env"]["MARK"] == "région 1 = ok"
    assert request["env"]["FLAME_CACHE_DIR"] == str(tmp_path / "cache")  # the whole env
    assert SOCKET_ENV == "FLAME_WARM_SOCKET"


def test_no_launcher_at_the_path_means_a_cold_start(tmp_path: Path) -> None:
    assert delegate(str(tmp_path / "gone.sock"), ["x"]) is None
    (tmp_path / "not-a-socket").write_text("")
    assert delegate(str(tmp_path / "not-a-socket"), ["x"]) is None


@pytest.mark.parametrize(
    "answer",
    [b"", b"12", b"not a pid\n", b"\n"],
    ids=["closed-without-reply", "reply-cut-short", "not-a-number", "empty-line"],
)
def test_a_launcher_that_answers_no_pid_means_a_cold_start(
    launcher: Callable[[Reply], Launcher], answer: bytes
) -> None:
    stub = launcher(lambda connection, _: connection.sendall(answer))
    assert delegate(str(stub.path), ["x"]) is None
    assert len(stub.requests) == 1  # the request did arrive


def test_a_launcher_that_never_answers_gives_up_rather_than_hang(
    launcher: Callable[[Reply], Launcher],
) -> None:
    answered = threading.Event()
    stub = launcher(lambda *_: answered.wait(30))
    try:
        assert delegate(str(stub.path), ["x"]) is None
    finally:
        answered.set()


def test_read_line_joins_chunks_until_the_newline() -> None:
    reader, writer = socket.socketpair()
    reader.settimeout(30)
    with reader, writer:
        for part in (b'{"argv": ', b'["a"]', b"}\n"):
            writer.sendall(part)
        assert read_line(reader) == b'{"argv": ["a"]}\n'
        writer.sendall(b"\n")
        assert read_line(reader) == b"\n"


def test_read_line_refuses_a_line_cut_short() -> None:
    reader, writer = socket.socketpair()
    reader.settimeout(30)
    with reader:
        writer.sendall(b'{"argv": [')
        writer.close()
        with pytest.raises(ValueError, match="request cut short"):
            read_line(reader)


def test_read_line_refuses_a_line_longer_than_the_limit() -> None:
    reader, writer = socket.socketpair()

    def flood() -> None:
        try:
            writer.sendall(b"x" * (MAX_REQUEST * 3))  # no newline, ever
        except OSError:
            pass  # the reader gave up and closed its end

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    reader.settimeout(30)  # a reader that never gives up fails here, not by hanging the suite
    with reader:
        with pytest.raises(ValueError, match=f"request longer than {MAX_REQUEST} bytes"):
            read_line(reader)
    sender.join(timeout=30)
    writer.close()
    assert not sender.is_alive()
