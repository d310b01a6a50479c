"""Handing a ClientApp task to the warm launcher (``flame.ops.warm``) over its Unix socket:
one JSON line (the task's command line, environment and folder) in, the child's pid out."""

from __future__ import annotations

import json
import os
import socket

SOCKET_ENV = "FLAME_WARM_SOCKET"
MAX_REQUEST = 1 << 20


def delegate(path: str, argv: list[str]) -> int | None:
    """Hand this task to the launcher at ``path``; its pid, or None if the launcher is down."""
    request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(path)
            client.sendall(json.dumps(request).encode() + b"\n")
            return int(read_line(client))
    except (OSError, ValueError):
        return None


def read_line(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise ValueError("request cut short")
        data += chunk
        if len(data) > MAX_REQUEST and not data.endswith(b"\n"):
            raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    return data
