"""The warm ClientApp launcher: each task in a fresh process, without the start-up cost.

Flower 1.42 starts a new ``flwr-clientapp`` process for every message, and each spends about
4 s importing Flower's runtime and torch before its handler runs. ``flame supernode`` starts
this launcher next to the SuperNode: one process that imports Flower's ClientApp runtime, torch
and Flame once, then listens on a Unix socket (``FLAME_WARM_SOCKET``, mode 0600). Flame's
``flwr-clientapp`` (``flame.ops.approval``) hands each task's command line and environment to
it; the launcher forks a child that runs the task exactly as a fresh process would (the
region's app approval, then Flower's own ``run_clientapp``), so every task still has its own
process and no state survives from one task or run to the next. The parent never starts a
thread or a torch operation, so forking it is safe.

If the launcher is down, the task starts the normal way, with one warning.
``FLAME_WARM_CLIENTAPP=false`` turns it off.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import traceback
from pathlib import Path

from flame.log import setup_logging
from flame.ops.handoff import SOCKET_ENV, read_line

log = logging.getLogger("flame.ops.warm")


def preload() -> None:
    """Everything a ClientApp task imports, once, in the parent."""
    import numpy  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  (torch.optim imports it at the first step: 1 s, sympy)
    from flwr.supernode.cli import flwr_clientapp  # noqa: F401

    import flame.fl.client_app
    import flame.model.train
    from flame.ops.approval import IMAGE, approved
    from flame.settings import load_settings

    trusted = load_settings().trusted_apps
    if IMAGE in trusted:
        try:  # each task's approval check then costs nothing
            approved(trusted, Path.cwd())
        except (OSError, ValueError):
            pass  # not an app folder: each task fails its check with the reason

    try:
        import flame.fl.privacy  # noqa: F401  (Opacus, for DP runs)
    except ImportError:
        pass


def serve(path: Path) -> None:
    """Accept tasks on ``path`` until SIGTERM; fork one child per task."""
    preload()
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("Warm ClientApp launcher ready on %s", path)
    try:
        while True:
            ready, _, _ = select.select([server], [], [], 1.0)
            _reap()
            if ready:
                connection, _ = server.accept()
                with connection:
                    _start(connection, server)
    finally:
        server.close()
        path.unlink(missing_ok=True)
        if path.parent.name.startswith("flame-warm-"):
            path.parent.rmdir()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _start(connection: socket.socket, server: socket.socket) -> None:
    connection.settimeout(5)
    try:
        request = json.loads(read_line(connection))
        argv, env, cwd = list(request["argv"]), dict(request["env"]), str(request["cwd"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("warm launcher: bad request (%s)", err)
        return
    pid = os.fork()
    if pid == 0:  # the task's own process
        server.close()
        connection.close()
        os._exit(_run_task(argv, env, cwd))
    connection.sendall(f"{pid}\n".encode())


def _run_task(argv: list[str], env: dict[str, str], cwd: str) -> int:
    """In the forked child: become the task's process and run it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["flwr-clientapp", *argv]
        run_clientapp_task()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the task's own failure: report it like a process
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


def run_clientapp_task() -> None:
    """What a task runs once it is its own process: Flame's checked ``flwr-clientapp``."""
    from flame.ops.approval import clientapp_main

    clientapp_main()


def start_launcher() -> Path:
    """Start the launcher for this process's ClientApp tasks (it dies with this process);
    children find it through ``FLAME_WARM_SOCKET``. Returns its socket path."""
    import subprocess
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="flame-warm-")) / "launcher.sock"
    subprocess.Popen(
        [sys.executable, "-m", "flame.ops.warm", str(path)], preexec_fn=_die_with_parent
    )
    os.environ[SOCKET_ENV] = str(path)
    return path


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent (the SuperNode) dies, even by SIGKILL."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main() -> None:
    setup_logging()
    serve(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
