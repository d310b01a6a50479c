"""A hostile coordinator against regions that approve only the genuine app, with real Flower
processes: the SuperLink runs the attacker's ServerApp (tests/hostile), the regions run the FAB
they approved (FLAME_TRUSTED_APPS=image)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flame.data.cache import cached_region
from flame.data.partition import prepare
from flame.model.net import FraudMLP
from flame.model.train import default_pos_weight
from flame.ops.approval import folder_hash
from flame.ops.local_deployment import LocalDeployment
from flame.settings import FlameSettings, load_settings, run_config
from tests.hostile.dp_replay import attack_env, attack_settings, one_round
from tests.hostile.serverapp import deployment_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


# a region that guards its privacy, as the compose regions ship (docker-compose.regions.yml)
PRIVATE_REGION = {
    "FLAME_POLICY_REQUIRE_DP": "true", "FLAME_POLICY_EVAL_NOISE": "8",
    "FLAME_POLICY_MAX_EVALUATIONS": "3", "FLAME_POLICY_MAX_EPSILON": "3",
}  # fmt: skip


def deployment_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:  # type: ignore[type-arg]
    """Two regions on a small synthetic partition, approving only the app in their folder."""
    env = {
        "FLAME_CACHE_DIR": str(tmp_path / "cache"), "FLAME_OUT_DIR": str(tmp_path / "run"),
        "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1", "FLAME_SYNTH_ROWS": "5000",
        "FLAME_STATE_DIR": str(tmp_path / "state"),
        "FLAME_TRUSTED_APPS": "image",  # regions approve exactly the app in their own folder
    } | env  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    prepare(load_settings().data_spec())
    return env


def run_hostile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: str,
    runs: tuple[dict[str, str], ...] = ({},), **env: str,
) -> Path:  # fmt: skip
    """Runs of ``app`` as the coordinator's ServerApp against two approving regions, one per
    entry of ``runs`` (the run settings the coordinator submits for it, over ``env``); returns
    the folder the deployment's logs are in (the attack's findings: ``tmp_path / "hostile"``)."""
    env = deployment_settings(tmp_path, monkeypatch, **env)
    env |= deployment_env(tmp_path / "bin", app, tmp_path / "hostile")
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), env=env) as deployment:
        deployment.start()
        base = dict(deployment.env)
        for run in runs:
            deployment.env = base | run
            code = deployment.submit(ROOT).wait(timeout=300)
            assert code == 0, (folder / "launch.log").read_text()
    assert list((tmp_path / "hostile").glob("serverapp-*.json")), "the hostile ServerApp never ran"
    # the regions fetched the genuine FAB: the hash of the app folder they approve as `image`
    assert f"fab_hash={folder_hash(ROOT)}" in (folder / "superlink.log").read_text()
    return folder


@pytest.mark.parametrize("subspace", ["0", "8"], ids=["every-weight", "public-subspace"])
def test_seed_replay_does_not_strip_the_dp_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subspace: str
) -> None:
    """The coordinator replays a region's DP-SGD step from its public seed and subtracts the
    noise; the replay must not recover the noise-free update (error of the order of the noise).
    In a public subspace (FLAME_DP_SUBSPACE) the attacker computes the same basis itself."""
    env = attack_env() | {"FLAME_DP_SUBSPACE": subspace}
    folder = run_hostile(tmp_path, monkeypatch, "tests.hostile.dp_replay:app", **env)
    settings = launched_attack_settings()
    scores = {region: score(folder, tmp_path / "hostile", region) for region in settings.regions}
    (tmp_path / "hostile" / "scores.json").write_text(json.dumps(scores))
    for region, (error, noise) in scores.items():
        print(f"{region}: recovery error {error:.3g}, noise norm {noise:.3g}")
    for region, (error, noise) in scores.items():
        assert noise > 0, region  # the region did add noise
        assert error > 0.5 * noise, f"{region}: DP noise stripped ({error:.3g} vs {noise:.3g})"


def launched_attack_settings() -> FlameSettings:
    """The hostile ServerApp's settings: the attack's over the run config ``flame launch``
    submitted from this environment (which holds every run setting, resolved)."""
    return attack_settings(run_config(load_settings()))


def score(folder: Path, found_in: Path, region: str) -> tuple[float, float]:
    """(||recovered - true||, ||received - true||) of ``region``'s update, where true is the
    noise-free update: the region's own step from the same weights and seed, with σ = 0."""
    settings = launched_attack_settings()
    log = (folder / f"supernode-{region}.log").read_text()
    assert "is not in FLAME_TRUSTED_APPS" not in log, region
    assert f"{region} round 1 train:" in log, region  # the region trained the approved app
    found = np.load(found_in / f"{region}.npz")
    initial = {k.split(".", 1)[1]: torch.from_numpy(found[k]) for k in found if "initial." in k}
    model = FraudMLP(found["initial.net.0.weight"].shape[1], settings.hidden_sizes)
    model.load_state_dict(initial)
    arrays = cached_region(settings.data_spec(), region, "")
    assert arrays is not None
    x, y = arrays["train"]
    assert len(x) == int(found["rows"])
    pos_weight = settings.pos_weight or default_pos_weight(y)
    true = one_round(
        settings, model, torch.from_numpy(x), torch.from_numpy(y), pos_weight,
        int(found["seed"]), 0.0,
    )  # fmt: skip

    def distance(kind: str) -> float:
        squares = (((found[f"{kind}.{k}"] - v.numpy()) ** 2).sum() for k, v in true.items())
        return float(np.sqrt(sum(squares)))

    return distance("recovered"), distance("received")


def test_a_probing_coordinator_is_refused_at_every_limit_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against regions requiring DP, runs whose run config has a sampling rate below 1/rows or
    a noise multiplier of 0 are refused with the setting named, and so is a fourth evaluate
    message with the same weights (the policy allows 3); the evaluation answers that are given
    are privatized (the same weights on the same rows give different histograms) and charged to
    each region's ledger."""
    dp = {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "1", "FLAME_NUM_SERVER_ROUNDS": "1",
          "FLAME_CODEC": "none"}  # fmt: skip
    runs = (dp | {"FLAME_DP_SAMPLE_RATE": "1e-12", "FLAME_DP_NOISE_MULTIPLIER": "1"},
            dp | {"FLAME_DP_NOISE_MULTIPLIER": "0"}, dp)  # fmt: skip
    app = "tests.hostile.probe:app"
    folder = run_hostile(tmp_path, monkeypatch, app, runs, **PRIVATE_REGION)
    found = {p.stem[6:]: json.loads(p.read_text()) for p in (tmp_path / "hostile").glob("probe-*")}
    for attempt, setting in (("tiny_rate", "(FLAME_DP_SAMPLE_RATE)"),
                             ("zero_noise", "(FLAME_POLICY_REQUIRE_DP)")):  # fmt: skip
        reasons = found[attempt]
        assert len(reasons) == 2 and all(setting in str(r) for r in reasons.values()), reasons
        assert all("\n" not in str(r) for r in reasons.values())
    answered, *rest, refused = found["evaluations"]
    assert set(answered) == {"us", "eu"} and len(rest) == 2
    for region in ("us", "eu"):
        assert answered[region] != rest[0][region], "identical answers: not privatized"
        log = (folder / f"supernode-{region}.log").read_text()
        assert "(FLAME_POLICY_MAX_EVALUATIONS=3)" in log, region
    assert all("already had 3 evaluation answers" in str(r) for r in refused.values()), refused
    shown = ledger_lines(tmp_path / "state")
    for region in ("us", "eu"):
        (run,) = [line for line in shown[region] if line.split()[0].isdigit()]
        assert run.split()[3:6] == ["0", "3", "0"], run  # no training, 3 privatized answers


def ledger_lines(state: Path) -> dict[str, list[str]]:
    """``flame ledger``'s lines per region, as the region's operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "flame.cli", "ledger"], capture_output=True, text=True,
        env=os.environ | {"FLAME_STATE_DIR": str(state)}, check=True,
    )  # fmt: skip
    regions: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("region "):
            current = regions.setdefault(line.split()[1], [line])
        else:
            current.append(line)
    return regions


def test_a_second_run_past_the_lifetime_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two DP runs of the genuine app, each within the per-run cap; the regions' lifetime cap
    holds one: the second run is refused by both regions in one line naming the cap, trains
    nothing and fails, and each ledger shows the first run only. A SuperNode restarted
    between the runs keeps its ledger."""
    policy = PRIVATE_REGION | {"FLAME_POLICY_LIFETIME_EPSILON": "1.3"}
    run = {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "1", "FLAME_NUM_SERVER_ROUNDS": "1",
           "FLAME_JOIN_TIMEOUT": "60", "FLAME_OUT_DIR": ""}  # fmt: skip  # runs/<timestamp>
    env = deployment_settings(tmp_path, monkeypatch, **policy, **run)
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), env=env) as deployment:
        deployment.start()
        assert deployment.submit(ROOT).wait(timeout=300) == 0, (folder / "launch.log").read_text()
        first = ledger_lines(tmp_path / "state")
        deployment.kill(deployment.nodes["us"])  # a restart forgets nothing
        deployment.start_node(0)
        code = deployment.submit(ROOT).wait(timeout=300)
    assert code != 0  # no region trained: the run fails
    runs = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/metrics.csv"))
    assert len(runs) == 2 and len(list((tmp_path / "runs").glob("*/model.pt"))) == 1, runs
    launch = (folder / "launch.log").read_text()
    assert "above FLAME_POLICY_LIFETIME_EPSILON=1.3" in launch
    for region in ("us", "eu"):
        log = (folder / f"supernode-{region}.log").read_text()
        assert "above FLAME_POLICY_LIFETIME_EPSILON=1.3" in log, region
    after = ledger_lines(tmp_path / "state")
    for region in ("us", "eu"):
        header, _, *runs = first[region]
        assert len(runs) == 1 and "left of FLAME_POLICY_LIFETIME_EPSILON=1.3" in header, header
        header, _, *runs = after[region]
        assert runs[0] == first[region][2]  # the first run, as it was
        assert all(line.split()[3] == "0" for line in runs[1:]), runs  # no training charged
        lifetime = float(header.split("lifetime ε=")[1].split()[0])
        assert lifetime <= 1.3, header  # (an evaluate the policy still allowed may be there)
