"""TLS on every link and SuperNode authentication, with real Flower processes on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from flame.data.partition import prepare
from flame.ops.approval import folder_hash
from flame.ops.certs import make_all, make_node_key
from flame.ops.local_deployment import LocalDeployment, _bin
from flame.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_all(folder, [])
    return folder


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each region's own key folder, as ``flame keygen`` makes it at the site."""
    folder = tmp_path_factory.mktemp("sites")
    for region in ("us", "eu"):
        make_node_key(folder / region)
    return folder


def online(deployment: LocalDeployment) -> list[dict]:
    out = subprocess.run(
        [_bin("flwr"), "supernode", "list", "flame", "--format", "json"],
        env=deployment.env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [n for n in json.loads(out)["nodes"] if n["status"] == "online"]


def test_credentials_are_private_and_cover_every_dialled_name(certs: Path, sites: Path) -> None:
    from cryptography import x509

    pem = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    sans = pem.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(n.value) for n in sans}
    assert {"superlink", "localhost", "127.0.0.1"} <= names
    for key in (certs / "ca.key", certs / "server.key", sites / "us/node.key"):
        assert key.stat().st_mode & 0o077 == 0, key
    assert make_all(certs, []) == []  # never silently rotated
    assert not make_node_key(sites / "us")


def test_tls_and_node_auth_run_completes(
    tmp_path: Path, certs: Path, sites: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "FLAME_CACHE_DIR": str(tmp_path / "cache"), "FLAME_OUT_DIR": str(tmp_path / "run"),
        "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1", "FLAME_SYNTH_ROWS": "20000",
        "FLAME_NUM_SERVER_ROUNDS": "2", "FLAME_LOCAL_EPOCHS": "1",
        "FLAME_TRUSTED_APPS": "image",  # regions approve exactly the app in their own folder
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    prepare(load_settings().data_spec())
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), env=env, certs=certs, sites=sites) as deployment:
        deployment.start()  # registers each region's public key, then starts its node
        assert deployment.submit(ROOT).wait(timeout=400) == 0, (folder / "launch.log").read_text()
        assert len(online(deployment)) == 2
    assert "Uvicorn running on https://" in (folder / "superlink.log").read_text()
    server = pd.read_csv(tmp_path / "run" / "metrics.csv").query("kind == 'server'")
    assert sorted(server["round"]) == [0, 1, 2]


def test_unregistered_keyless_and_insecure_nodes_are_refused(
    tmp_path: Path, certs: Path, sites: Path
) -> None:
    make_node_key(tmp_path / "intruder")  # a valid key pair the SuperLink never saw
    ca = str(certs / "ca.crt")
    intruders = {
        "unregistered key": ["--root-certificates", ca,
                             "--auth-supernode-private-key", str(tmp_path / "intruder/node.key")],
        "no key": ["--root-certificates", ca],
        "insecure": ["--insecure"],
    }  # fmt: skip
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), certs=certs, sites=sites) as deployment:
        deployment.start_superlink()
        processes = {}
        for name, extra in intruders.items():
            deployment.security = []
            processes[name] = deployment.start_node(0, extra=extra, wait=False)
        deadline = time.time() + 60
        while time.time() < deadline and any(
            processes[n].poll() is None for n in ("unregistered key", "no key")
        ):
            time.sleep(0.5)
        assert processes["unregistered key"].poll() not in (None, 0)
        assert processes["no key"].poll() not in (None, 0)
        time.sleep(5)
        assert processes["insecure"].poll() is None  # still knocking, never let in
        assert online(deployment) == []
        log = (folder / "supernode-us.log").read_text()
        assert "Failed to activate SuperNode" in log and "Connection attempt failed" in log
        for process in processes.values():
            deployment.kill(process)
        # the same port admits the registered key
        assert deployment.register(sites / "eu" / "node.pub").returncode == 0
        deployment.start_node(1)
        deadline = time.time() + 60
        while not online(deployment) and time.time() < deadline:
            time.sleep(1)
        assert len(online(deployment)) == 1


def test_a_region_refuses_an_app_it_did_not_approve_before_its_code_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same app with one changed line (it writes a marker file when imported) is refused
    by both regions: the marker never appears, the server hears an error from each region."""
    app = tmp_path / "app"
    shutil.copytree(ROOT / "flame", app / "flame", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "main.py"):
        shutil.copy(ROOT / name, app / name)
    marker = tmp_path / "tampered-code-ran"
    client = app / "flame" / "fl" / "client_app.py"
    client.write_text(client.read_text() + f"\nPath({str(marker)!r}).write_text('ran')\n")
    assert folder_hash(app) != folder_hash(ROOT)
    env = {
        "FLAME_CACHE_DIR": str(tmp_path / "cache"), "FLAME_OUT_DIR": str(tmp_path / "run"),
        "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1", "FLAME_SYNTH_ROWS": "5000",
        "FLAME_NUM_SERVER_ROUNDS": "1", "FLAME_JOIN_TIMEOUT": "60",
        "FLAME_TRUSTED_APPS": "image",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    prepare(load_settings().data_spec())
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), env=env) as deployment:
        deployment.start()
        code = deployment.submit(app).wait(timeout=300)
    assert code != 0  # no region trained: the run fails, no model is saved
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not marker.exists()
    for region in ("us", "eu"):
        log = (folder / f"supernode-{region}.log").read_text()
        assert "is not in FLAME_TRUSTED_APPS of this region" in log, region
    missing = pd.read_csv(tmp_path / "run" / "metrics.csv").query("kind == 'client_aggregate'")
    assert set(missing["missing"].dropna()) == {"eu;us"}


def test_image_means_the_app_folder_as_it_was_when_the_node_started(tmp_path: Path) -> None:
    """The warm launcher hashes the app once, before it forks tasks: a later edit of the
    folder is not approved by ``image``."""
    from flame.ops.approval import approved, image_hash

    app = tmp_path / "app"
    shutil.copytree(ROOT / "flame", app / "flame", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "main.py"):
        shutil.copy(ROOT / name, app / name)
    try:
        first = approved(["image"], app)
        (app / "main.py").write_text("print('edited after the node started')\n")
        assert approved(["image"], app) == first
        assert folder_hash(app) not in first
    finally:
        image_hash.cache_clear()
