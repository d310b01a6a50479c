"""A hostile coordinator against regions that approve only the genuine app, with real Flower
processes: the SuperLink runs the attacker's ServerApp (tests/hostile), the regions run the FAB
they approved (FLAME_TRUSTED_APPS=image)."""

from __future__ import annotations

import json
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
from flame.settings import load_settings
from tests.hostile.dp_replay import attack_settings, one_round
from tests.hostile.serverapp import deployment_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def run_hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: str) -> Path:
    """One run of ``app`` as the coordinator's ServerApp against two approving regions; returns
    the folder the deployment's logs are in (the attack's findings: ``tmp_path / "hostile"``)."""
    env = {
        "FLAME_CACHE_DIR": str(tmp_path / "cache"), "FLAME_OUT_DIR": str(tmp_path / "run"),
        "FLAME_MLFLOW": "false", "TQDM_DISABLE": "1", "FLAME_SYNTH_ROWS": "5000",
        "FLAME_TRUSTED_APPS": "image",  # regions approve exactly the app in their own folder
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    prepare(load_settings())
    env |= deployment_env(tmp_path / "bin", app, tmp_path / "hostile")
    folder = tmp_path / "deployment"
    with LocalDeployment(folder, load_settings(), env=env) as deployment:
        deployment.start()
        assert deployment.submit(ROOT).wait(timeout=300) == 0, (folder / "launch.log").read_text()
    assert list((tmp_path / "hostile").glob("serverapp-*.json")), "the hostile ServerApp never ran"
    # the regions fetched the genuine FAB: the hash of the app folder they approve as `image`
    assert f"fab_hash={folder_hash(ROOT)}" in (folder / "superlink.log").read_text()
    return folder


def test_seed_replay_does_not_strip_the_dp_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator replays a region's DP-SGD step from its public seed and subtracts the
    noise; the replay must not recover the noise-free update (error of the order of the noise)."""
    folder = run_hostile(tmp_path, monkeypatch, "tests.hostile.dp_replay:app")
    settings = attack_settings()
    scores = {region: score(folder, tmp_path / "hostile", region) for region in settings.regions}
    (tmp_path / "hostile" / "scores.json").write_text(json.dumps(scores))
    for region, (error, noise) in scores.items():
        print(f"{region}: recovery error {error:.3g}, noise norm {noise:.3g}")
    for region, (error, noise) in scores.items():
        assert noise > 0, region  # the region did add noise
        assert error > 0.5 * noise, f"{region}: DP noise stripped ({error:.3g} vs {noise:.3g})"


def score(folder: Path, found_in: Path, region: str) -> tuple[float, float]:
    """(||recovered - true||, ||received - true||) of ``region``'s update, where true is the
    noise-free update: the region's own step from the same weights and seed, with σ = 0."""
    settings = attack_settings()
    log = (folder / f"supernode-{region}.log").read_text()
    assert "is not in FLAME_TRUSTED_APPS" not in log, region
    assert f"{region} round 1 train:" in log, region  # the region trained the approved app
    found = np.load(found_in / f"{region}.npz")
    initial = {k.split(".", 1)[1]: torch.from_numpy(found[k]) for k in found if "initial." in k}
    model = FraudMLP(found["initial.net.0.weight"].shape[1], settings.hidden_sizes)
    model.load_state_dict(initial)
    arrays = cached_region(settings, region, "")
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
