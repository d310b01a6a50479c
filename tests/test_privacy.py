from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants import RDPAccountant

from flame.data.features import build_features, labels
from flame.data.synth import generate
from flame.fl.client_app import dp_config
from flame.fl.privacy import dp_train, load_history
from flame.model.net import FraudMLP
from flame.model.train import Plan
from flame.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    frame = generate(4_000, seed=1, fraud_rate=0.02)
    return torch.from_numpy(build_features(frame)), torch.from_numpy(labels(frame))


STEPS = 8  # per round


def rounds(settings, data, n: int, state: RecordDict) -> list[tuple[float, float, bool]]:  # type: ignore[no-untyped-def]
    x, y = data
    model = FraudMLP(x.shape[1], [16])
    plan = Plan(steps=STEPS, rounds=n, lr=1e-3)
    config = dp_config(settings)
    return [
        dp_train(
            model, x, y, config=config, plan=plan, rnd=r + 1, state=state, pos_weight=2.0, seed=r
        )
        for r in range(n)
    ]


def test_epsilon_is_cumulative_and_matches_opacus(data) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(dp=True, dp_noise_multiplier=1.1, dp_batch_size=500)
    state = RecordDict()
    results = rounds(settings, data, 3, state)
    eps = [r[1] for r in results]
    assert eps[0] < eps[1] < eps[2]
    # the same steps through one fresh Opacus accountant give the same ε
    reference = RDPAccountant()
    reference.history = [(1.1, 500 / len(data[0]), STEPS * 3)]
    assert eps[2] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-6)
    assert sum(h[2] for h in load_history(state)) == STEPS * 3


def test_logical_batches_larger_than_physical_ones_count_once(data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """BatchMemoryManager splits a logical batch; the accountant still counts logical steps."""
    monkeypatch.setattr("flame.fl.privacy.PHYSICAL_BATCH", 256)
    settings = load_settings(dp=True, dp_noise_multiplier=1.0, dp_sample_rate=0.5)
    state = RecordDict()
    rounds(settings, data, 1, state)
    assert load_history(state) == [(1.0, 0.5, STEPS)]


def test_target_epsilon_is_not_exceeded(data) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(dp=True, dp_target_epsilon=2.0, dp_batch_size=256)
    results = rounds(settings, data, 3, RecordDict())
    assert not any(r[2] for r in results)
    assert results[-1][1] <= 2.0 * 1.01 and results[-1][1] > 1.5  # spent, not wasted


def test_budget_exhaustion_stops_training(data) -> None:  # type: ignore[no-untyped-def]
    x, y = data
    settings = load_settings(
        dp=True, dp_noise_multiplier=1.0, dp_target_epsilon=3.0, dp_batch_size=256
    )
    state, model = RecordDict(), FraudMLP(x.shape[1], [16])
    spent, exhausted = [], False
    plan, config = Plan(steps=16, rounds=1, lr=1e-3), dp_config(settings)
    for r in range(20):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        kwargs = {"config": config, "plan": plan, "rnd": 1, "state": state}
        loss, eps, exhausted = dp_train(model, x, y, pos_weight=2.0, seed=r, **kwargs)
        if exhausted:
            assert math.isnan(loss)
            assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
            break
        spent.append(eps)
    assert exhausted and spent and max(spent) <= 3.0 * 1.01


def test_dp_settings_need_noise_or_budget() -> None:
    with pytest.raises(SettingsError, match="FLAME_DP_NOISE_MULTIPLIER"):
        load_settings(dp=True)


@pytest.mark.integration
def test_dp_run_reports_epsilon_every_round(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from tests.test_integration import run_main

    out = tmp_path / "dp"
    run_main(
        ["--rounds", "3", "--rows", "20000", "--fraud-rate", "0.01", "--local-epochs", "1",
         "--out", str(out)],
        {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "4"},
    )  # fmt: skip
    table = pd.read_csv(out / "metrics.csv")
    train = table[table["stage"] == "train"]
    for kind in ("client:us", "client:eu", "client_aggregate"):
        eps = train.loc[train["kind"] == kind].sort_values("round")["epsilon"].to_numpy()
        assert len(eps) == 3 and (eps[1:] > eps[:-1]).all() and eps[-1] <= 4 * 1.01, kind


def test_region_policy_refuses_looser_runs_and_run_config_cannot_change_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flame.fl.privacy import PolicyError, check_policy

    check_policy(True, 2.9, 1e-5, True, 3.0, 1e-5)  # within the policy
    with pytest.raises(PolicyError, match="only with DP-SGD"):
        check_policy(False, math.inf, 1e-5, True, 0.0, 0.0)
    with pytest.raises(PolicyError, match=r"plans ε=8.*at most ε=3 \(FLAME_POLICY_MAX_EPSILON\)"):
        check_policy(True, 8.0, 1e-5, False, 3.0, 0.0)
    with pytest.raises(PolicyError, match="FLAME_POLICY_MAX_DELTA"):
        check_policy(True, 1.0, 1e-3, False, 0.0, 1e-5)
    monkeypatch.setenv("FLAME_POLICY_MAX_EPSILON", "3")
    monkeypatch.setenv("FLAME_TRUSTED_APPS", "image")
    asked = {"policy-max-epsilon": 100.0, "trusted-apps": "", "dp-target-epsilon": 8.0}
    settings = load_settings(asked)
    assert settings.policy_max_epsilon == 3 and settings.trusted_apps == ["image"]
    assert settings.dp_target_epsilon == 8.0  # what the run asks for still arrives


def test_planned_epsilon_is_the_accountants_for_the_whole_plan(data) -> None:  # type: ignore[no-untyped-def]
    from flame.fl.privacy import planned_epsilon

    settings = load_settings(dp=True, dp_target_epsilon=3.0)
    plan = Plan(steps=50, rounds=4, lr=1e-3)
    assert planned_epsilon(dp_config(settings), len(data[0]), plan) == pytest.approx(3.0, rel=0.01)


@pytest.mark.integration
def test_a_region_refuses_a_run_asking_for_more_epsilon_than_it_allows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    out = tmp_path / "loose"
    env = {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "8", "FLAME_POLICY_MAX_EPSILON": "3"}
    proc = subprocess.run(
        [sys.executable, "main.py", "--rounds", "1", "--rows", "5000", "--fraud-rate", "0.05",
         "--out", str(out)],
        cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    table = pd.read_csv(out / "metrics.csv").query("kind == 'client_aggregate'")
    assert set(table["missing"].dropna()) == {"eu;us"}
    assert "this region accepts at most ε=3 (FLAME_POLICY_MAX_EPSILON)" in proc.stderr + proc.stdout
    # every region refused, so nothing was trained: the run fails and saves no model
    assert proc.returncode == 1
    assert "error: the run failed: no region returned a model update" in proc.stderr
    failed = next(line for line in proc.stderr.splitlines() if "the run failed" in line)
    assert "refused: region policy" in failed and len(failed) < 600  # the reason, one line
    assert not (out / "model.pt").exists()


def test_a_budget_too_small_for_the_planned_steps_names_the_setting() -> None:
    from flame.fl.privacy import BudgetError, DPConfig, noise_multiplier

    config = DPConfig(None, 0.001, 1e-5, 1.0, "adam", 1024)
    with pytest.raises(BudgetError, match=r"FLAME_DP_TARGET_EPSILON=0\.001 is too small for 200"):
        noise_multiplier(config, 0.6, 200)
    assert noise_multiplier(DPConfig(None, 3.0, 1e-5, 1.0, "adam", 1024), 0.01, 200) > 0


def test_a_refusal_is_an_error_reply_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from flame.fl.mods import refusals_as_errors
    from flame.fl.privacy import PolicyError

    def refuse(msg: Message, context: Context) -> Message:
        raise PolicyError("region policy: this region trains only with DP-SGD (FLAME_DP=true)")

    def crash(msg: Message, context: Context) -> Message:
        raise KeyError("a bug")

    for name in ("_run_id", "_task_id", "_node_id"):  # as Flower's runtime sets them
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)
    task = Message(RecordDict(), dst_node_id=1, message_type="train")
    context = Context(1, 1, {"region": "eu"}, RecordDict(), {})
    reply = refusals_as_errors(task, context, refuse)
    assert reply.has_error()
    assert reply.error.reason == (
        "eu refused: region policy: this region trains only with DP-SGD (FLAME_DP=true)"
    )
    with pytest.raises(KeyError):  # anything else is a crash, as before
        refusals_as_errors(task, context, crash)


def test_region_policy_on_codecs_and_simulated_attacks(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flame.fl.privacy import PolicyError, check_update_policy

    check_update_policy("int8", None, ["int8", "topk"], ["none"])  # not an adversary: fine
    check_update_policy("none", "sign_flip", [], [])  # no policy: anything
    with pytest.raises(PolicyError, match=r"codec 'none'.*sends only int8 \(FLAME_POLICY_CODECS\)"):
        check_update_policy("none", None, ["int8"], [])
    with pytest.raises(PolicyError, match=r"attack 'scale'.*\(FLAME_POLICY_ATTACKS\)"):
        check_update_policy("none", "scale", [], ["none"])
    monkeypatch.setenv("FLAME_POLICY_ATTACKS", "none")
    monkeypatch.setenv("FLAME_POLICY_CODECS", "int8,topk")
    settings = load_settings({"policy-attacks": "", "policy-codecs": "none"})
    assert settings.policy_attacks == ["none"] and settings.policy_codecs == ["int8", "topk"]
    with pytest.raises(ValueError, match="FLAME_POLICY_CODECS"):
        load_settings(policy_codecs="gzip")


@pytest.mark.integration
def test_a_region_refuses_to_act_as_an_adversary_when_its_policy_says_none(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from tests.test_integration import run_main

    out = tmp_path / "attack"
    proc = run_main(
        ["--rounds", "1", "--rows", "5000", "--fraud-rate", "0.05", "--out", str(out)],
        {
            "FLAME_ADVERSARIAL_REGIONS": "eu",
            "FLAME_ATTACK": "scale",
            "FLAME_POLICY_ATTACKS": "none",
        },
    )
    table = pd.read_csv(out / "metrics.csv").query("kind == 'client_aggregate'")
    assert set(table["missing"].dropna()) == {"eu"}  # us trains; eu refuses to attack
    assert "simulate attack 'scale', this region allows none" in proc.stderr + proc.stdout
