from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants import RDPAccountant

from flame.data.features import build_features, labels
from flame.data.synth import generate
from flame.fl.client_app import RegionState, dp_config
from flame.fl.ledger import TRAIN, Ledger
from flame.fl.privacy import dp_train
from flame.model.net import FraudMLP
from flame.model.train import Plan
from flame.settings import FlameSettings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    frame = generate(4_000, seed=1, fraud_rate=0.02)
    return torch.from_numpy(build_features(frame)), torch.from_numpy(labels(frame))


STEPS = 8  # per round


def train_round(
    settings: FlameSettings, data, model: FraudMLP, plan: Plan, rnd: int, run: str = "1"
) -> tuple[float, float, bool]:  # type: ignore[no-untyped-def]
    """One round as the ClientApp trains it: the region's ledger and secret in FLAME_STATE_DIR."""
    x, y = data
    state = RegionState(settings, "us", run, rnd)
    return dp_train(
        model, x, y, config=dp_config(settings), plan=plan, rnd=rnd,
        history=state.history(TRAIN), pos_weight=2.0,
        charge=lambda sigma, q, steps: state.charge(TRAIN, sigma, q, steps),
    )  # fmt: skip


def rounds(settings: FlameSettings, data, n: int) -> list[tuple[float, float, bool]]:  # type: ignore[no-untyped-def]
    model = FraudMLP(data[0].shape[1], [16])
    plan = Plan(steps=STEPS, rounds=n, lr=1e-3)
    return [train_round(settings, data, model, plan, r + 1) for r in range(n)]


def releases(settings: FlameSettings, region: str = "us") -> list:  # type: ignore[type-arg]
    with Ledger(settings.state_dir / region) as ledger:
        return ledger.releases()


def test_epsilon_is_cumulative_and_matches_opacus(data) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(dp=True, dp_noise_multiplier=1.1, dp_batch_size=500)
    results = rounds(settings, data, 3)
    eps = [r[1] for r in results]
    assert eps[0] < eps[1] < eps[2]
    # the same steps through one fresh Opacus accountant give the same ε
    reference = RDPAccountant()
    reference.history = [(1.1, 500 / len(data[0]), STEPS * 3)]
    assert eps[2] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-6)
    charged = releases(settings)
    assert [r.round for r in charged] == [1, 2, 3] and sum(r.steps for r in charged) == STEPS * 3
    assert [r.epsilon for r in charged] == eps  # the ledger holds what the region reported


def test_logical_batches_larger_than_physical_ones_count_once(data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """BatchMemoryManager splits a logical batch; the accountant still counts logical steps."""
    monkeypatch.setattr("flame.fl.privacy.PHYSICAL_BATCH", 256)
    settings = load_settings(dp=True, dp_noise_multiplier=1.0, dp_sample_rate=0.5)
    rounds(settings, data, 1)
    assert [(r.noise, r.rate, r.steps) for r in releases(settings)] == [(1.0, 0.5, STEPS)]


def test_target_epsilon_is_not_exceeded(data) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(dp=True, dp_target_epsilon=2.0, dp_batch_size=256)
    results = rounds(settings, data, 3)
    assert not any(r[2] for r in results)
    assert results[-1][1] <= 2.0 * 1.01 and results[-1][1] > 1.5  # spent, not wasted


def test_budget_exhaustion_stops_training(data) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        dp=True, dp_noise_multiplier=1.0, dp_target_epsilon=3.0, dp_batch_size=256
    )
    model = FraudMLP(data[0].shape[1], [16])
    spent, exhausted = [], False
    plan = Plan(steps=16, rounds=1, lr=1e-3)
    for r in range(20):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss, eps, exhausted = train_round(settings, data, model, plan, r + 1)
        if exhausted:
            assert math.isnan(loss)
            assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
            break
        spent.append(eps)
    assert exhausted and spent and max(spent) <= 3.0 * 1.01
    assert len(releases(settings)) == len(spent)  # a round that sat out released nothing


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
    from flame.fl.privacy import DPConfig, PolicyError, RegionPolicy, check_run

    plan, rows = Plan(steps=50, rounds=3, lr=1e-3), 4_000
    dp = DPConfig(None, 2.9, 1e-5, 1.0, "adam", 256)
    strict = RegionPolicy(require_dp=True, max_epsilon=3.0, max_delta=1e-5, eval_noise=8.0)
    check_run(True, dp, rows, plan, strict)  # within the policy
    with pytest.raises(PolicyError, match="only with DP-SGD"):
        check_run(False, dp, rows, plan, strict)
    with pytest.raises(PolicyError, match=r"plans ε=8.*at most ε=3 per run \(FLAME_POLICY_MAX_EP"):
        check_run(True, DPConfig(None, 8.0, 1e-5, 1.0, "adam", 256), rows, plan, strict)
    with pytest.raises(PolicyError, match="FLAME_POLICY_MAX_DELTA"):
        check_run(True, DPConfig(None, 1.0, 1e-3, 1.0, "adam", 256), rows, plan, strict)
    # no δ limit set: a region that guards its privacy takes at most 1/rows
    with pytest.raises(
        PolicyError, match=r"at most δ=0.00025 \(FLAME_POLICY_MAX_DELTA; unset: 1/r"
    ):
        check_run(True, DPConfig(None, 1.0, 1e-3, 1.0, "adam", 256), rows, plan,
                  RegionPolicy(require_dp=True, eval_noise=8.0))  # fmt: skip
    # noise 0 is clipping only: no privacy, refused where DP is required
    with pytest.raises(PolicyError, match=r"noise multiplier 0 .*FLAME_POLICY_REQUIRE_DP"):
        check_run(True, DPConfig(0.0, 0.0, 1e-5, 1.0, "adam", 256), rows, plan, strict)
    # a sampling rate below 1/rows: Opacus would sample (and account) at 1/rows instead
    tiny = DPConfig(1.0, 0.0, 1e-5, 1.0, "adam", 256, sample_rate=1e-12)
    for policy in (strict, RegionPolicy()):
        with pytest.raises(PolicyError, match=r"below 1/rows = 0.00025 .*\(FLAME_DP_SAMPLE_RATE\)"):
            check_run(True, tiny, rows, plan, policy)
    monkeypatch.setenv("FLAME_POLICY_MAX_EPSILON", "3")
    monkeypatch.setenv("FLAME_POLICY_LIFETIME_EPSILON", "10")
    monkeypatch.setenv("FLAME_POLICY_EVAL_NOISE", "8")
    monkeypatch.setenv("FLAME_TRUSTED_APPS", "image")
    asked = {"policy-max-epsilon": 100.0, "policy-lifetime-epsilon": 1e9, "trusted-apps": "",
             "dp-target-epsilon": 8.0, "state-dir": "/elsewhere", "val-fraction": 0.99}  # fmt: skip
    settings = load_settings(asked)
    assert settings.policy_max_epsilon == 3 and settings.trusted_apps == ["image"]
    assert settings.policy_lifetime_epsilon == 10 and settings.val_fraction == 0.2
    assert settings.state_dir != Path("/elsewhere")  # the server cannot move a region's ledger
    assert settings.dp_target_epsilon == 8.0  # what the run asks for still arrives


def test_a_region_guarding_its_privacy_needs_privatized_evaluation() -> None:
    for policy in ({"policy_require_dp": True}, {"policy_lifetime_epsilon": 5.0}):
        with pytest.raises(SettingsError, match="need FLAME_POLICY_EVAL_NOISE > 0"):
            load_settings(**policy)


def charge_rows(settings: FlameSettings, policy, rows: list[tuple[str, str, float, float, int]]):  # type: ignore[no-untyped-def]
    """Charge (run, kind, noise, rate, steps) releases in order; the run's ε after each."""
    from flame.fl.ledger import Release
    from flame.fl.privacy import charge

    out = []
    for rnd, (run, kind, noise, rate, steps) in enumerate(rows, 1):
        with Ledger(settings.state_dir / "us") as ledger, ledger.charging() as charging:
            release = Release(run, "fab", rnd, kind, noise, rate, steps, 1e-5)
            out.append(charge(charging, release, policy)[0])
    return out


def test_the_lifetime_cap_holds_across_runs_and_restarts() -> None:
    from flame.fl.privacy import PolicyError, RegionPolicy, accounted, epsilon_of

    settings = load_settings()
    policy = RegionPolicy(lifetime_epsilon=2.0)
    one_run = [("run-a", TRAIN, 2.0, 0.05, 100)]
    (first,) = charge_rows(settings, policy, one_run)
    assert 1.0 < first < 2.0  # one run fits
    # a second run, in a new process (a new Ledger on the same file): its own ε starts at 0,
    # the region's lifetime spend does not
    (second,) = charge_rows(settings, policy, [("run-b", TRAIN, 2.0, 0.05, 100)])
    assert second == pytest.approx(first)
    spent = epsilon_of(accounted(releases(settings)), 1e-5)
    assert spent > first and spent <= 2.0
    with pytest.raises(
        PolicyError, match=r"lifetime spend from ε=.* above FLAME_POLICY_LIFETIME_EP"
    ):
        charge_rows(settings, policy, [("run-c", TRAIN, 2.0, 0.05, 100)])
    assert [r.run_id for r in releases(settings)] == ["run-a", "run-b"]  # refused: not charged


def test_per_run_and_evaluation_caps_count_every_answer() -> None:
    from flame.fl.ledger import EVALUATE
    from flame.fl.privacy import PolicyError, RegionPolicy

    settings = load_settings()
    policy = RegionPolicy(max_epsilon=1.0, max_evaluations=2, eval_noise=10.0)
    eps = charge_rows(settings, policy, [("r", EVALUATE, 10.0, 1.0, 1)] * 2)
    assert 0 < eps[0] < eps[1] < 1.0  # privatized answers are charged and compose
    with pytest.raises(PolicyError, match=r"already had 2 evaluation answers.*MAX_EVALUATIONS=2\)"):
        charge_rows(settings, policy, [("r", EVALUATE, 10.0, 1.0, 1)])
    charge_rows(settings, policy, [("other-run", EVALUATE, 10.0, 1.0, 1)])  # per run
    with pytest.raises(
        PolicyError, match=r"would take the run to ε=.*\(FLAME_POLICY_MAX_EPSILON\)"
    ):
        charge_rows(settings, policy, [("r", TRAIN, 0.6, 0.5, 100)])
    strict_delta = RegionPolicy(max_delta=1e-5, eval_noise=10.0)
    with Ledger(settings.state_dir / "us") as ledger, ledger.charging() as charging:
        from flame.fl.ledger import Release
        from flame.fl.privacy import charge

        with pytest.raises(PolicyError, match=r"δ=0.99, .*at most δ=1e-05 \(FLAME_POLICY_MAX_D"):
            charge(charging, Release("d", "", 1, EVALUATE, 10.0, 1.0, 1, 0.99), strict_delta)
    exact = charge_rows(settings, RegionPolicy(), [("x", EVALUATE, 0.0, 1.0, 1)])
    assert exact == [0.0]  # an exact answer is counted, not covered by ε (docs say so)
    assert charge_rows(settings, RegionPolicy(), [("y", TRAIN, 0.0, 0.1, 10)]) == [math.inf]


def test_a_round_is_charged_before_it_trains(data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A crash mid-training leaves the release in the ledger: over-counted, never under."""
    settings = load_settings(dp=True, dp_noise_multiplier=1.0, dp_batch_size=500)

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("killed mid-round")

    monkeypatch.setattr("flame.fl.privacy.BatchMemoryManager", crash)
    with pytest.raises(RuntimeError, match="killed mid-round"):
        rounds(settings, data, 1)
    assert [(r.round, r.steps) for r in releases(settings)] == [(1, STEPS)]


def test_two_regions_with_the_same_rows_draw_different_noise(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Same rows, settings, seed, round and initial weights; separate state folders: different
    DP updates. The same round asked twice of one region draws fresh noise too (a difference
    of two answers cancels nothing). Whoever holds the region's secret and ledger replays it."""
    from flame.fl.region_secret import derived_key, load_secret

    def one(folder: str, charge=None) -> torch.Tensor:  # type: ignore[no-untyped-def]
        settings = load_settings(
            dp=True, dp_noise_multiplier=1.0, dp_batch_size=500, state_dir=tmp_path / folder
        )
        torch.manual_seed(0)
        model = FraudMLP(data[0].shape[1], [16])
        state = RegionState(settings, "us", "7", 1)
        dp_train(
            model, *data, config=dp_config(settings), plan=Plan(steps=STEPS, rounds=1, lr=1e-3),
            rnd=1, history=[], pos_weight=2.0,
            charge=charge or (lambda *release: state.charge(TRAIN, *release)),
        )  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, again = one("site-a"), one("site-b"), one("site-a")
    assert not torch.allclose(a, b) and not torch.allclose(a, again)
    with Ledger(tmp_path / "site-a" / "us") as ledger:
        first = ledger.db.execute("SELECT min(id) FROM releases").fetchone()[0]
    key = derived_key(load_secret(tmp_path / "site-a" / "us"), "7", 1, first)
    replayed = one("elsewhere", lambda *release: (0.0, key))
    assert torch.equal(a, replayed)


def test_planned_epsilon_is_the_accountants_for_the_whole_plan(data) -> None:  # type: ignore[no-untyped-def]
    from flame.fl.privacy import planned_epsilon

    settings = load_settings(dp=True, dp_target_epsilon=3.0)
    plan = Plan(steps=50, rounds=4, lr=1e-3)
    assert planned_epsilon(dp_config(settings), len(data[0]), plan) == pytest.approx(3.0, rel=0.01)


@pytest.mark.integration
def test_a_region_refuses_a_run_asking_for_more_epsilon_than_it_allows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    out = tmp_path / "loose"
    env = {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "8", "FLAME_POLICY_MAX_EPSILON": "3",
           "FLAME_POLICY_EVAL_NOISE": "8"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "main.py", "--rounds", "1", "--rows", "5000", "--fraud-rate", "0.05",
         "--out", str(out)],
        cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    table = pd.read_csv(out / "metrics.csv").query("kind == 'client_aggregate'")
    assert set(table["missing"].dropna()) == {"eu;us"}
    refusal = "this region accepts at most ε=3 per run (FLAME_POLICY_MAX_EPSILON)"
    assert refusal in proc.stderr + proc.stdout
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
    from flwr.app import Context, Message
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


def test_histogram_bins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAME_POLICY_HISTOGRAM_BINS", "25")
    assert load_settings().policy_histogram_bins == 25
    monkeypatch.setenv("FLAME_POLICY_HISTOGRAM_BINS", "30")
    with pytest.raises(SettingsError, match="FLAME_POLICY_HISTOGRAM_BINS"):
        load_settings()


def test_noise_and_sampling_draw_from_the_whole_key() -> None:
    """torch's manual_seed keeps 32 bits of a seed; the region's streams use every bit."""
    from flame.fl.privacy import sampling_generator
    from flame.fl.region_secret import SecretStream

    key = bytes(range(32))
    near = key[:-1] + bytes([key[-1] ^ 1])  # one bit apart
    draws = SecretStream(key).normal(100_000)
    assert np.array_equal(draws, SecretStream(key).normal(100_000))  # the key's holder replays
    assert not np.allclose(draws[:100], SecretStream(near).normal(100))
    assert abs(draws.mean()) < 0.02 and abs(draws.std() - 1) < 0.02  # standard normal
    rand = [torch.rand(1000, generator=sampling_generator(SecretStream(k))) for k in (key, near)]
    assert not torch.equal(*rand)
    again = torch.rand(1000, generator=sampling_generator(SecretStream(key)))
    assert torch.equal(rand[0], again)


def hostile_model(x: torch.Tensor, y: torch.Tensor, target: int, scale: float, bias: float):  # type: ignore[no-untyped-def]
    """A coordinator's crafted model: one hidden unit fires only on row ``target`` (the largest
    value of a feature no other row, private or public, comes near), and drives the loss up
    by ``scale`` there; ``bias`` lifts every row's loss past the divergence threshold."""
    from flame.fl.subspace import public_rows

    public_x, _ = public_rows(3, True)
    rest = torch.cat([x[:target], x[target + 1 :]])
    gaps = [x[target, c] - max(rest[:, c].max(), public_x[:, c].max()) for c in range(x.shape[1])]
    j = int(np.argmax(gaps))
    t = float(max(rest[:, j].max(), public_x[:, j].max()))
    torch.manual_seed(0)
    model = FraudMLP(x.shape[1], [16, 8])
    with torch.no_grad():
        model.net[0].weight[0].zero_()
        model.net[0].weight[0, j], model.net[0].bias[0] = 1e4, -1e4 * t
        model.net[3].weight[0].zero_()
        model.net[3].weight[0, 0], model.net[3].bias[0] = scale, 0.0
        model.net[6].weight[0, 0] = -1e3 if y[target] == 1 else 1e3
        model.net[6].bias[0] = bias
    return model


def with_and_without(scale: float, bias: float, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The region's DP round (as the ClientApp runs it: policy-free, its ledger and secret) on
    its rows with and without the coordinator's target row, from the crafted model."""
    from flame.fl.client_app import local_training, training_plan

    frame = generate(3_000, seed=11, fraud_rate=0.03)
    x = torch.from_numpy(build_features(frame, drop_balances=True))
    y = torch.from_numpy(labels(frame))
    target = int(torch.argmax(x.max(dim=0).values - x.topk(2, dim=0).values[1]).item())
    target = int(torch.argmax(x[:, target]))  # the row with a feature value all its own
    keep = torch.arange(len(x)) != target
    outcomes = []
    for name, (xs, ys) in {"without": (x[keep], y[keep]), "with": (x, y)}.items():
        settings = load_settings(
            dp=True, dp_noise_multiplier=50.0, dp_batch_size=10**9, min_local_steps=1,
            local_epochs=1, num_server_rounds=1, lr_schedule="constant",
            state_dir=tmp_path / name,
        )  # fmt: skip
        model = hostile_model(x, y, target, scale, bias)
        state = RegionState(settings, "us", "1", 1)
        try:
            local_training(model, xs.numpy(), ys.numpy(), settings, state,
                           training_plan(settings, len(xs)))  # fmt: skip
            outcomes.append(
                ("weights", all(bool(torch.isfinite(p).all()) for p in model.parameters()))
            )
        except Exception as err:  # noqa: BLE001 - what the coordinator would read
            outcomes.append(("error", str(err)))
    return outcomes


def test_a_crafted_model_learns_nothing_from_the_divergence_check(tmp_path: Path) -> None:
    """The divergence check read the noise-free training loss and sent it in its error: a
    crafted model made it differ with the target row present (mean loss 176) and absent (97)."""
    without, with_row = with_and_without(scale=1.0, bias=100.0, tmp_path=tmp_path)
    assert without == with_row == ("weights", True), (without, with_row)


def test_a_row_that_overflows_its_gradient_does_not_poison_the_release(tmp_path: Path) -> None:
    """A crafted model overflows the target row's gradient (a hidden weight of 1e37): Opacus's
    clip factor C/(inf) is 0, and 0·inf is NaN, so one row made the whole release NaN."""
    without, with_row = with_and_without(scale=1e37, bias=0.0, tmp_path=tmp_path)
    assert without == with_row == ("weights", True), (without, with_row)
