"""Routes around a region's app approval (``FLAME_TRUSTED_APPS``), with real Flower processes on
loopback: one SuperLink and one ``flame supernode`` per region (``LocalDeployment``), shared by
the attacks of this module. Each attack's code, if it ran on a region, writes a marker file; each
test asserts that no marker appears.

(A) An AgentApp-only FAB (``tests/hostile/agentapp``) submitted with a user prompt, as ``flwr
    chat`` does: the SuperLink makes it an AGENT_APP run, its AgentApp messages every node, and
    each SuperNode runs the FAB's AgentApp in Flower's own ``flwr-agentapp``, which Flame's
    checked ``flwr-clientapp`` never sees. Each region must refuse it (its log says "refused").
(B) An install folder planted under the node's ``$FLWR_HOME/apps`` at the very path Flower
    installs the approved app's FAB to (what an earlier task, e.g. (A), could write): Flower
    reuses a folder that exists without checking its contents, and takes the ClientApp to load
    from its ``pyproject.toml``. The approved app must still run its own, freshly extracted
    code on every region: the run completes and the planted code never runs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from flwr.cli.build import build_fab_from_disk

from flame.data.partition import prepare
from flame.ops.approval import fab_hash
from flame.ops.local_deployment import LocalDeployment, _bin
from flame.settings import FlameSettings, _region_settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).resolve().parent / "hostile"
REGIONS = ("us", "eu")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """Both regions approve exactly the app in their own folder (``image``: this checkout)."""
    base = tmp_path_factory.mktemp("trust")
    env = {
        "FLAME_CACHE_DIR": str(base / "cache"), "FLAME_OUT_DIR": str(base / "run"),
        "FLAME_STATE_DIR": str(base / "state"), "FLAME_RUNS_DIR": str(base / "runs"),
        "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1", "FLAME_SYNTH_ROWS": "5000",
        "FLAME_PRETRAIN_ROWS": "20000", "FLAME_NUM_SERVER_ROUNDS": "1",
        "FLAME_LOCAL_EPOCHS": "1", "FLAME_JOIN_TIMEOUT": "60", "FLAME_TRUSTED_APPS": "image",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:  # conftest's isolation, for the whole module
        for key in list(os.environ):
            if key.startswith("FLAME_") and key != "FLAME_REAL_DATA_DIR":
                patch.delenv(key)
        patch.setitem(FlameSettings.model_config, "env_file", None)
        for key, value in env.items():
            patch.setenv(key, value)
        _region_settings.cache_clear()
        prepare(load_settings().data_spec())
        with LocalDeployment(base / "deployment", load_settings(), env=env) as running:
            running.start()
            yield running
    _region_settings.cache_clear()


def logs_since(deployment: LocalDeployment) -> Callable[[], dict[str, str]]:
    """Each region's SuperNode log from now on (the deployment is shared by the tests)."""
    paths = {r: deployment.folder / f"supernode-{r}.log" for r in REGIONS}
    start = {r: p.stat().st_size for r, p in paths.items()}

    def read() -> dict[str, str]:
        return {r: p.read_bytes()[start[r] :].decode(errors="replace") for r, p in paths.items()}

    return read


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def flwr(deployment: LocalDeployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_bin("flwr"), *args], env=deployment.env, capture_output=True, text=True, timeout=60
    )


def run_status(deployment: LocalDeployment, run_id: int) -> str:
    done = flwr(deployment, "ls", "flame", "--run-id", str(run_id), "--format", "json")
    runs = json.loads(done.stdout or "{}").get("runs", []) if done.returncode == 0 else []
    return str(runs[0].get("status", "")) if runs else ""


def test_an_agentapp_only_fab_runs_on_no_region(
    deployment: LocalDeployment, tmp_path: Path
) -> None:
    """(A) The hostile AgentApp, started as ``flwr chat`` starts one, reaches every SuperNode as
    an AGENT_APP task: each region refuses it before any of its code runs."""
    markers = tmp_path / "markers"
    markers.mkdir()
    logs = logs_since(deployment)
    started = subprocess.run(
        [sys.executable, "-m", "tests.hostile.agent_run", str(HOSTILE / "agentapp"),
         "summarise the fraud rate of each region", f"marker-dir={markers}"],
        env=deployment.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    run_id = int(started.stdout.split()[-1])

    def ran() -> list[str]:
        return sorted(p.name for p in markers.glob("agentapp-ran-on-*"))

    def refused() -> bool:
        return all("refused" in text for text in logs().values())

    wait_until(lambda: len(ran()) == len(REGIONS) or refused(), timeout=120)
    # replies (or the nodes' error replies) end the run; a run still waiting is stopped
    if not wait_until(lambda: run_status(deployment, run_id).startswith("finished"), 30):
        flwr(deployment, "stop", str(run_id), "flame")
    replies = markers / "replies.json"  # what the SuperLink's side got back from the nodes
    sent = replies.read_text() if replies.exists() else "no replies"
    assert ran() == [], f"the AgentApp ran on {ran()}; the nodes sent back: {sent}"
    for region, text in logs().items():
        assert "refused" in text, f"{region} did not log its refusal:\n{text[-3000:]}"


def plant(folder: Path, fab: bytes, marker: Path) -> None:
    """An install folder written before the app's run: the genuine FAB's files, with a ClientApp
    module added and named in its ``pyproject.toml``. That ClientApp appends to
    ``<marker>-<partition-id>`` and then runs the genuine one, so the run looks normal."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        archive.extractall(folder)
    (folder / ".info" / "CONTENT").unlink()
    (folder / ".info").rmdir()
    pyproject = folder / "pyproject.toml"
    genuine = 'clientapp = "flame.fl.client_app:app"'
    assert genuine in pyproject.read_text()
    pyproject.write_text(pyproject.read_text().replace(genuine, 'clientapp = "planted:app"'))
    (folder / "planted.py").write_text(
        "from pathlib import Path\n\n"
        "from flwr.clientapp import ClientApp\n\n"
        "from flame.fl.client_app import app as genuine\n\n"
        "app = ClientApp()\n\n\n"
        "def mark(message, context):\n"
        f"    path = Path({str(marker)!r} + f\"-{{context.node_config['partition-id']}}\")\n"
        "    with path.open('a') as out:\n"
        "        out.write(f'{message.metadata.message_type}\\n')\n"
        "    return genuine(message, context)\n\n\n"
        "app.train()(mark)\n"
        "app.evaluate()(mark)\n"
    )


def test_a_planted_install_folder_of_the_approved_app_is_not_loaded(
    deployment: LocalDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(B) Code planted in the approved app's install folder never runs; the approved app, run
    from its own FAB, still trains on every region and the run completes."""
    from flwr.common.config import get_project_dir

    fab = build_fab_from_disk(ROOT)
    home = Path(deployment.env["FLWR_HOME"])  # every node's (and the SuperLink's) here
    folder = home / "apps" / f"flame.flame.0.1.0.{fab_hash(fab)[:8]}"
    monkeypatch.setenv("FLWR_HOME", str(home))
    assert get_project_dir("flame/flame", "0.1.0", fab_hash(fab)) == folder  # Flower's path
    marker = tmp_path / "planted-code-ran"
    plant(folder, fab, marker)
    out = Path(deployment.env["FLAME_OUT_DIR"])
    launch = deployment.folder / "launch.log"
    before = launch.stat().st_size if launch.exists() else 0
    process = deployment.submit(ROOT)
    try:
        code = process.wait(timeout=300)
    finally:
        deployment.kill(process)
    planted = sorted(p.name for p in tmp_path.glob("planted-code-ran*"))
    assert planted == [], f"the code planted in {folder} ran: {planted}"
    assert code == 0, launch.read_bytes()[before:].decode(errors="replace")[-3000:]
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics.query("kind == 'server'")["round"]) == [0, 1]
    assert (out / "model.pt").exists()
