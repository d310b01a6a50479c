"""A hostile SuperLink against the region's app approval (flame.ops.approval), with real
Flower processes on loopback: one SuperLink, and one ``flame supernode`` per region that
reaches it through a hostile Fleet proxy (the coordinator itself, which the threat model
counts as an attacker: it controls every answer the SuperLink gives a node).

(C) A planted install folder, loaded through the run's FAB version. The approved FAB is sent
    unchanged (its hash is approved, its bytes have that hash), but the run info the node gets
    (``GetRun``) carries a ``fab_version`` with ``/..`` in it. Flower's ClientApp runner installs
    the FAB into the task's fresh folder (from the FAB's own pyproject), then *loads* the
    ClientApp from ``get_project_dir(run.fab_id, run.fab_version, fab.hash_str)``, a path built
    from the run info: the traversal walks out of the fresh folder to one planted earlier (here,
    the one ``tests/test_trust_boundaries.py`` (B) plants at the app's old install path), and
    its code runs next to the region's rows, inside an approved run.
    Fixed: ``fab_refusal`` also refuses a run whose ``fab_id``/``fab_version`` are not the FAB's
    own (``get_metadata_from_config(get_fab_config(content))``), and ``guard`` loads the
    ClientApp from the folder ``install_from_fab`` returned (``get_load_client_app_fn`` with
    ``app_path`` set: Flower then also checks the id and version against it).
"""

from __future__ import annotations

import http.client
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.proto.run_pb2 import GetRunResponse

from flame.data.partition import prepare
from flame.ops.approval import fab_hash
from flame.ops.local_deployment import LocalDeployment, free_port
from flame.settings import FlameSettings, _region_settings, load_settings
from tests.test_trust_boundaries import plant

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
HOP = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a node closing its keep-alive connection


class FleetProxy:
    """A hostile SuperLink's Fleet API: forwards every request to ``upstream`` and hands each
    response body to ``rewrite(path, body)`` before the node sees it."""

    def __init__(self, upstream: str) -> None:
        self.rewrite: Callable[[str, bytes], bytes] = lambda _path, body: body
        self.seen: list[str] = []
        host, port = upstream.rsplit(":", 1)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.forward("POST")

            def do_GET(self) -> None:
                self.forward("GET")

            def forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(host, int(port), timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                upstream.request(method, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                proxy.seen.append(self.path)
                if response.status == 200:
                    data = proxy.rewrite(self.path, data)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.server = QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalDeployment, FleetProxy]]:
    """Both regions approve exactly the app in their own folder (``image``: this checkout), and
    reach the SuperLink only through the hostile proxy."""
    base = tmp_path_factory.mktemp("gate")
    env = {
        "FLAME_CACHE_DIR": str(base / "cache"), "FLAME_OUT_DIR": str(base / "run"),
        "FLAME_STATE_DIR": str(base / "state"), "FLAME_RUNS_DIR": str(base / "runs"),
        "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1", "FLAME_SYNTH_ROWS": "5000",
        "FLAME_PRETRAIN_ROWS": "20000", "FLAME_NUM_SERVER_ROUNDS": "1",
        "FLAME_LOCAL_EPOCHS": "1", "FLAME_JOIN_TIMEOUT": "60", "FLAME_TRUSTED_APPS": "image",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("FLAME_") and key != "FLAME_REAL_DATA_DIR":
                patch.delenv(key)
        patch.setitem(FlameSettings.model_config, "env_file", None)
        for key, value in env.items():
            patch.setenv(key, value)
        _region_settings.cache_clear()
        prepare(load_settings().data_spec())
        with LocalDeployment(base / "deployment", load_settings(), env=env) as running:
            running.start_superlink()
            proxy = FleetProxy(running.address)
            real, running.address = running.address, proxy.address
            try:
                for index in range(len(running.settings.regions)):
                    running.start_node(index)
            finally:
                running.address = real  # `flame launch` talks to the SuperLink itself
            try:
                yield running, proxy
            finally:
                proxy.close()
    _region_settings.cache_clear()


def test_the_run_info_cannot_point_the_clientapp_at_a_planted_folder(
    hostile: tuple[LocalDeployment, FleetProxy], tmp_path: Path
) -> None:
    """(C) An approved run whose run info (from a hostile SuperLink) names a ``fab_version``
    with ``/..``: the ClientApp must run the FAB it installed, never a folder elsewhere."""
    deployment, proxy = hostile
    fab = build_fab_from_disk(ROOT)
    digest = fab_hash(fab)
    home = Path(deployment.env["FLWR_HOME"])
    planted = home / "apps" / f"flame.flame.0.1.0.{digest[:8]}"  # test_trust_boundaries (B)
    marker = tmp_path / "planted-code-ran"
    plant(planted, fab, marker)
    # Flower loads FLWR_HOME/apps/{publisher}.{name}.{fab_version}.{hash[:8]}: out of the
    # task's fresh FLWR_HOME (its installed folder exists, so the `..` resolve) into `planted`
    up = "../" * 40
    version = f"0.1.0.{digest[:8]}/{up}{str(planted.parent).lstrip('/')}/flame.flame.0.1.0"

    def rewrite(path: str, body: bytes) -> bytes:
        if path != "/v1/fleet/get-run":
            return body
        response = GetRunResponse()
        response.ParseFromString(body)
        response.run.fab_version = version
        return response.SerializeToString()

    proxy.rewrite = rewrite
    shutil.rmtree(deployment.env["FLAME_OUT_DIR"], ignore_errors=True)  # the ServerApp's
    process = deployment.submit(ROOT)
    try:
        process.wait(timeout=300)
    except Exception:  # noqa: BLE001 - a refused run may never finish: it is killed
        pass
    finally:
        deployment.kill(process)
        proxy.rewrite = lambda _path, body: body
    assert "/v1/fleet/get-run" in proxy.seen
    ran = sorted(p.name for p in tmp_path.glob("planted-code-ran*"))
    assert ran == [], f"an approved run loaded the code planted in {planted} on {ran}"
    for region in ("us", "eu"):  # refused at the SuperNode, before any task
        log = (deployment.folder / f"supernode-{region}.log").read_text()
        assert "names app 'flame/flame' version" in log, region
