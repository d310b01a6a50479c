"""The whole compose stack under a real Docker engine (offline build path).

Needs a running Docker engine: `.ci/run` starts one. Without one this test FAILS with a clear
message; deselect it explicitly with `-m "not compose"`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, log_variable: str, log: Path, timeout: int) -> str:
    """Run ``scripts/<script>`` with the stack's settings from .env only, as a user's would;
    its stdout, after asserting exit 0 (else the tail of its output and of the compose log)."""
    env = os.environ | {"PYTHON": sys.executable, log_variable: str(log)}
    for key in [k for k in env if k.startswith("FLAME_") and k != log_variable]:
        env.pop(key)
    proc = subprocess.run(
        [f"scripts/{script}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    logged = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + logged[-4000:]
    return proc.stdout


@pytest.mark.compose
def test_compose_stack_trains_and_logs_to_mlflow(tmp_path: Path) -> None:
    engine = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if engine.returncode != 0:
        pytest.fail(
            "no Docker engine reachable ('docker info' failed): start one with "
            "`sudo scripts/install-docker.sh`, or deselect with -m 'not compose'"
        )
    out = run_script("compose-e2e.sh", "FLAME_E2E_LOG", tmp_path / "compose.log", 2400)
    assert "MLflow run complete" in out
    assert "MLflow refuses @champion moves: anonymous 401, reader 403" in out
    # the default run is a DP run the regions' default policy accepts: ε every round, capped
    assert "DP run: True" in out and "region us: ε per round" in out
    # the regions joined through the Fleet-only gateway; from the host, its port refuses
    # `flwr run` / `flwr ls` (HTTP 403) and no run was added
    assert "the public port refuses the Control API" in out
    # segmented networks, played from inside each region container: only gateway:9443 answers;
    # the SuperLink's port and MLflow are unreachable by name and by address
    for region in ("us", "eu"):
        assert f"{region}-client reaches only the gateway" in out
    # SuperExec authentication: a task request without the shared secret's signature is refused
    assert "the SuperLink refuses task requests without the SuperExec secret" in out
    # limits at the public door: a 100 MB body gets 413 (a 5 MiB Fleet object passes), a burst 429
    assert "the gateway refuses a 100 MB body with 413" in out
    assert "the gateway rate-limits a burst from one address" in out
    # keys made where they are used: no coordinator volume holds a region's private key
    assert "no coordinator volume holds one" in out
    # a rogue FAB: an AgentApp-only app submitted from the coordinator's host is refused by
    # every region before it runs; a planted install folder is loaded by no later run
    for region in ("us", "eu"):
        assert f"{region}-client refused the AgentApp-only FAB; it never ran" in out
        assert f"{region}-client ran the approved app, not the planted folder" in out
    # a second run: each region's ledger (its own state volume) holds both
    assert out.count("MLflow run complete") == 2
    for region in ("us", "eu"):
        assert f"the {region} ledger holds both runs" in out
    # each region's own scorer (issue 24): rows one per request, the history in its Redis,
    # equal to `flame score` on the whole file across a restart; its own history, its own Redis
    for region in ("us", "eu"):
        matched = f"{region}-scorer matches flame score on every row, before and after its restart"
        assert matched in out
        assert f"only {region}-scorer reaches {region}-redis" in out
    assert "each region's scorer has its own history" in out
    assert "verify-region-scorer: passed" in out


@pytest.mark.compose
def test_multihost_site_joins_through_the_gateway(tmp_path: Path) -> None:
    """The README's multi-host path: a site in its own compose project, holding only the key
    it made itself and ca.crt, trains through the coordinator's public (Fleet-only) port with
    TLS; then an unregistered site is refused, and a run killed mid-way is resumed. Uses the
    image the test above built."""
    out = run_script("multihost-e2e.sh", "FLAME_MH_LOG", tmp_path / "mh.log", 1800)
    assert "the eu site trained through the gateway" in out
    assert "DP run: True" in out  # under the sites' default policy
    # the site's secret and ledger live in its own volume, kept when its container is re-made
    assert "the site's state volume survived its container's re-creation" in out
    # the site made its own key pair; only node.pub went to the coordinator, which registered it
    assert "the site made its own key; no coordinator volume holds it" in out
    # a remote site with the CA and a valid but unregistered key never joins
    assert "a site with an unregistered key is refused" in out
    # the ServerApp and SuperLink containers killed mid-run; the README's resume command
    # finishes the run and MLflow holds each of its 8 rounds exactly once
    assert "Resuming /runs/" in out
    assert "killed after round 2, resumed, every round in MLflow once" in out
    assert "the site's ledger holds all 3 runs" in out
