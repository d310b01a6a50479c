"""The ClientApp takes the run settings from the run's config (Flower's run config, the same
the ServerApp has), and its node settings from its own environment: a region's .env need not
mirror the server's, and no message carries settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flame.data.features import feature_names
from flame.fl import client_app
from flame.fl.client_app import training_plan
from flame.fl.protocol import EVALUATE_FIRST, VALIDATION_KEY
from flame.model.net import FraudMLP
from flame.settings import FlameSettings, load_settings, run_config


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_run_id", "_task_id", "_node_id"):  # as Flower's runtime sets them
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


def _task(settings: FlameSettings, kind: str = "train", evaluate_first: bool = False) -> Message:
    """A task as Flame's ServerApp sends it: weights for ``settings``' model, the round's config."""
    model = FraudMLP(len(feature_names(settings.drop_balance_features)), settings.hidden_sizes)
    config = {"server-round": 2, "threshold": 0.5, EVALUATE_FIRST: evaluate_first}
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord(config)}
    )
    return Message(content, dst_node_id=1, message_type=kind)


def _context(run: FlameSettings | None) -> Context:
    """The context Flower gives the ClientApp: the run's config (none: another app's run)."""
    return Context(1, 1, {"partition-id": 0}, RecordDict(), run_config(run) if run else {})


def test_run_settings_come_from_the_server_not_the_regions_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = load_settings(
        synth_rows=4000, synth_fraud_rate=0.05, local_epochs=1, min_local_steps=1,
        dp=True, dp_noise_multiplier=1.0,
    )  # fmt: skip
    # the region's own environment disagrees on run settings (no DP, other epochs and data)
    monkeypatch.setenv("FLAME_LOCAL_EPOCHS", "5")
    monkeypatch.setenv("FLAME_SYNTH_ROWS", "9000")
    monkeypatch.setenv("FLAME_DP", "false")
    monkeypatch.setenv("FLAME_TORCH_THREADS", "2")  # a node setting: the region's own
    reply = client_app.train(_task(server), _context(server))
    metrics = reply.content["metrics"]
    assert metrics["epsilon"] > 0  # trained with DP-SGD, as the server asked
    rows = int(metrics["num_examples"])
    assert metrics["steps"] == training_plan(server, rows).steps
    assert rows < 4000  # a partition of the server's 4,000 rows, not of the env's 9,000
    assert client_app.task_settings(_context(server)).torch_threads == 2


def test_a_run_without_flame_run_settings_is_refused_in_one_line() -> None:
    from flame.fl.mods import refusals_as_errors

    task = _task(load_settings(), "evaluate")
    reply = refusals_as_errors(task, _context(None), client_app.evaluate)
    assert reply.has_error()
    assert "refused: the run's config is refused: the run's config holds no Flame run setting" in (
        reply.error.reason
    )


def test_a_train_task_scores_the_model_it_received_before_training_it_when_asked() -> None:
    """One message per round: the train reply carries the same validation metrics an evaluate
    task for the received model would have sent."""
    server = load_settings(synth_rows=4000, synth_fraud_rate=0.05, min_local_steps=1)
    tasks = []
    for kind, first in (("train", False), ("train", True), ("evaluate", False)):
        torch.manual_seed(0)  # the same received model in all three
        tasks.append(_task(server, kind, evaluate_first=first))
    plain = client_app.train(tasks[0], _context(server))
    assert VALIDATION_KEY not in plain.content
    both = client_app.train(tasks[1], _context(server))
    alone = client_app.evaluate(tasks[2], _context(server))
    assert dict(both.content[VALIDATION_KEY]) == dict(alone.content["metrics"])
    assert both.content["metrics"]["train_loss"] == plain.content["metrics"]["train_loss"]


@pytest.mark.parametrize(
    ("noise", "clip", "charged"),
    [("0", "0", 0.0), ("8", "0", 8.0), ("8", "1000000", 8.0 / 2**0.5)],
)
def test_fraud_amount_sums_travel_only_as_the_regions_policy_allows(
    monkeypatch: pytest.MonkeyPatch, noise: str, clip: str, charged: float
) -> None:
    """Exact answers carry exact sums; a privatized answer carries them only with a clip, noised
    like its counts and charged as the second release it is (noise multiplier σ/√2); without a
    clip it leaves them out. Never an exact sum beside noisy counts."""
    from flame.data.features import amounts
    from flame.fl.client_app import region_arrays
    from flame.fl.ledger import Ledger
    from flame.fl.region_secret import region_folder
    from flame.model import metrics as fm

    monkeypatch.setenv("FLAME_POLICY_EVAL_NOISE", noise)
    monkeypatch.setenv("FLAME_POLICY_AMOUNT_CLIP", clip)
    server = load_settings(synth_rows=4000, synth_fraud_rate=0.05)
    answer = client_app.evaluate(_task(server, "evaluate"), _context(server)).content["metrics"]
    settings = client_app.task_settings(_context(server))
    with Ledger(region_folder(settings.state_dir, "us")) as ledger:
        (release,) = ledger.releases()
    assert release.noise == pytest.approx(charged)
    if clip == "0" and noise != "0":
        assert "hist_amount" not in answer
        return
    x, y = region_arrays(settings.data_spec(), "us", "")["val"]
    money = amounts(x)[y == 1]
    if noise == "0":  # the exact sum of the fraud rows' amounts, bin by bin
        assert sum(answer["hist_amount"]) == pytest.approx(money.sum(), rel=1e-6)
    else:  # noisy, in the clip's units: not the exact sum, same bins as the counts
        assert len(answer["hist_amount"]) == len(answer["hist_pos"])
        assert sum(answer["hist_amount"]) != pytest.approx(np.minimum(money, 1e6).sum())
        return
    assert 0 <= fm.alert_figures(answer, 0.5, 0.0)["amount_recall"] <= 1


@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_a_model_that_is_not_the_runs_is_refused_in_one_line(kind: str) -> None:
    """A coordinator that sends other weights (another model size or feature count) gets a
    one-line refusal naming them, not a traceback."""
    from flame.fl.mods import refusals_as_errors

    run = load_settings(synth_rows=4000, synth_fraud_rate=0.05, min_local_steps=1)
    other = load_settings(hidden_sizes="8", drop_balance_features=False)
    task = _task(other, kind)
    handler = client_app.train if kind == "train" else client_app.evaluate
    reply = refusals_as_errors(task, _context(run), handler)
    assert reply.has_error()
    reason = reply.error.reason
    assert "\n" not in reason and "the received model is refused" in reason
    assert "net.0.weight" in reason and len(reason) < 200  # fits the run's failure line
