"""Flame ServerApp: the regions' updates aggregated by FLAME_AGGREGATION (FedAvg, FedMedian, trimmed
mean, Krum, Multi-Krum), server-side evaluation on the held-out test set."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from flame.data.features import amounts, feature_names
from flame.data.partition import heldout_arrays
from flame.data.spec import DataSpec
from flame.fl import checkpoint, polling
from flame.fl.packing import PackedGrid
from flame.fl.protocol import BAD_INPUT, RunFailed, RunLearntNothing
from flame.fl.strategy import (
    ClippedNoisy,
    FlameStrategy,
    RoundClock,
    Selected,
    build_strategy,
    evaluated_through,
    one_message_per_round,
)
from flame.log import setup_logging
from flame.model import metrics as fm
from flame.model.net import FraudMLP, ModelCard, new_card, save_model
from flame.model.pretrain import initial_model
from flame.model.train import predict_logits
from flame.settings import (
    FlameSettings,
    PrivacySettings,
    SettingsError,
    UpdateSettings,
    server_settings,
)
from flame.track import plots
from flame.track.access import login
from flame.track.tracking import SELECTED, SERVER, Tracker, test_set_digest

log = logging.getLogger("flame.server")
app = ServerApp()


class ServerEvaluator:
    """Scores a global model on the server's held-out test set."""

    def __init__(
        self, model: FraudMLP, test: tuple[torch.Tensor, np.ndarray], alert_rate: float = 0.0
    ) -> None:
        self.model, (self.x, self.y), self.alert_rate = model, test, alert_rate
        shared = len(feature_names(drop_balances=True))  # columns every model variant has
        self.test_digest = test_set_digest(self.x.numpy(), self.y, shared)
        self.amounts = amounts(self.x.numpy())

    def score(self, arrays: ArrayRecord, threshold: float, budget: bool = True) -> dict[str, float]:
        """Test-set metrics of ``arrays``, alert figures included (its logits kept in
        ``self.logits``); the figures at the budget only when ``threshold`` was chosen for it."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        self.logits = predict_logits(self.model, self.x)
        rate = self.alert_rate if budget else 0.0
        alerts = fm.exact_alerts(self.logits, self.y, self.amounts, threshold, rate)
        return fm.exact_metrics(self.logits, self.y, threshold) | alerts

    def constant(self) -> bool:
        """The last model scored gives every test row the same logit (a dead network)."""
        return len(self.logits) > 1 and float(np.ptp(self.logits)) == 0.0


class RoundEnd:
    """Flower's ``evaluate_fn``, the end of every round: score the global model, log the round,
    checkpoint it, then let tracking deliver it."""

    def __init__(
        self, evaluator: ServerEvaluator, strategy: FlameStrategy, folder: Path,
        fixed: dict[str, object],
    ) -> None:  # fmt: skip
        self.evaluator, self.strategy, self.folder, self.fixed = evaluator, strategy, folder, fixed
        # a model whose round is logged once the regions have scored it (evaluate_in_train)
        self.pending: tuple[int, ArrayRecord] | None = None
        self.alive: dict[int, bool] = {}  # per trained round: its model tells rows apart

    def __call__(self, rnd: int, arrays: ArrayRecord) -> MetricRecord:
        rnd = self.strategy.clock(rnd)
        if self.strategy.clock.resumed_from(rnd):  # round 0 of a resumed run
            if self.strategy.waits_for_next_round(rnd):
                self.pending = (rnd, arrays)  # its regions score it in the next round
            return MetricRecord()  # else the run that made it logged it
        due, self.pending = [self.pending] if self.pending else [], None
        if self.strategy.waits_for_next_round(rnd):
            self.pending = (rnd, arrays)
        else:
            due.append((rnd, arrays))
        records = [self.log_round(r, a) for r, a in due]
        self.checkpoint(rnd, arrays)
        self.strategy.tracker.commit()
        return records[-1] if records else MetricRecord()

    def log_round(self, rnd: int, arrays: ArrayRecord) -> MetricRecord:
        """Score round ``rnd``'s model on the test set at its own threshold, and log it."""
        threshold, clients = self.strategy.scored.get(rnd, (self.strategy.threshold, None))
        # round 0 (or a run whose regions never score): no threshold was chosen for the budget
        chosen = self.strategy.auto_threshold and clients is not None
        scored = self.evaluator.score(arrays, threshold, budget=chosen)
        if self.strategy.clock.made(rnd):
            self.alive[rnd] = not self.evaluator.constant()
        self.strategy.tracker.log(SERVER, rnd, "evaluate", scored)
        log.info(_summary(rnd, scored, clients if rnd else None))
        return MetricRecord({k: v for k, v in scored.items() if isinstance(v, int | float)})

    def checkpoint(self, rnd: int, arrays: ArrayRecord) -> None:
        state = checkpoint.Checkpoint(rnd, self.strategy.threshold, self.fixed)
        chosen, selected = self.strategy.selected, None
        if chosen is not None:
            state.selected_round, state.selected_threshold = chosen.round, chosen.threshold
            state.selected_val_pr_auc, state.selected_val_counts = (
                chosen.val_pr_auc,
                chosen.val_counts,
            )
            selected = {k: chosen.arrays[k].numpy() for k in chosen.arrays}
        checkpoint.save(self.folder, state, {k: arrays[k].numpy() for k in arrays}, selected)


def _summary(rnd: int, server: dict[str, float], clients: MetricRecord | None) -> str:
    def part(m: object) -> str:
        g = m.__getitem__  # type: ignore[attr-defined]
        return (
            f"PR-AUC {g('pr_auc'):.4f} ROC-AUC {g('roc_auc'):.4f} P {g('precision'):.3f} "
            f"R {g('recall'):.3f} F1 {g('f1'):.3f} loss {g('loss'):.4f}"
        )

    text = f"round {rnd} | server test: {part(server)} @ threshold {server['threshold']:.6f}"
    if "precision_at_budget" in server:
        text += (
            f" (alert budget: P {server['precision_at_budget']:.3f} R "
            f"{server['recall_at_budget']:.3f}, alerts {server['alert_rate_at_budget']:.2%})"
        )
    return text + (f" | clients (pooled val): {part(clients)}" if clients else "")


def run_params(settings: FlameSettings, test_rows: int) -> dict[str, object]:
    params = settings.model_dump(mode="json", exclude={"mlflow_tracking_uri", "mlflow_credentials"})
    params["data_source"] = str(settings.data_source() or "synthetic")
    params["test_rows"] = test_rows
    return params


def privacy_line(privacy: PrivacySettings) -> str:
    """Whether this run is private, said plainly at its start."""
    if not privacy.dp:
        return "Privacy: NOT private: DP-SGD is off (FLAME_DP=true makes this a DP run)"
    budget = (
        f"target ε={privacy.dp_target_epsilon:g}" if privacy.dp_target_epsilon
        else f"noise multiplier {privacy.dp_noise_multiplier:g}"
    )  # fmt: skip
    return (
        f"Privacy: DP-SGD, {budget}, δ={privacy.dp_delta:g} per region; each region charges "
        "its own ledger and applies its own policy"
    )


class NothingTrainedError(RunFailed):
    """The run ended without a single aggregated update: its model would be the initial one."""


@dataclass
class Resumed:
    """A run picked up from its checkpoint after round ``state.round``."""

    state: checkpoint.Checkpoint
    weights: dict[str, np.ndarray]
    selected: dict[str, np.ndarray] | None

    def restore(self, model: FraudMLP, strategy: FlameStrategy) -> None:
        """The last global model into ``model``; the rounds done, threshold and selected model
        into ``strategy``."""
        model.load_state_dict({k: torch.from_numpy(v) for k, v in self.weights.items()})
        strategy.clock, strategy.threshold = RoundClock(self.state.round), self.state.threshold
        if self.selected is not None:
            weights = ArrayRecord({k: torch.from_numpy(v) for k, v in self.selected.items()})
            s = self.state
            strategy.selected = Selected(s.selected_round, weights, s.selected_threshold,
                                         s.selected_val_pr_auc, s.selected_val_counts)  # fmt: skip


def run_folder(settings: FlameSettings) -> tuple[Path, Resumed | None]:
    """The run's folder: a new one, or (FLAME_RESUME) the checkpointed run to continue."""
    if not settings.resume:
        out = settings.resolved_out_dir().resolve()
        checkpoint.check_new_folder(out)
        return out, None
    out = checkpoint.resume_folder(settings).resolve()
    resumed = Resumed(*checkpoint.load(out))
    checkpoint.check_compatible(resumed.state, settings, out)
    log.info("Resuming %s after round %d of %d", out, resumed.state.round,
             settings.num_server_rounds)  # fmt: skip
    return out, resumed


def test_set(data: DataSpec, out: Path) -> tuple[torch.Tensor, np.ndarray]:
    x, y = heldout_arrays(data)
    fm.require_usable_rows(y, "the server's test set", fm.UNDEFINED)
    log.info("Run folder %s; server test set %d rows, %d frauds", out, len(y), int(y.sum()))
    return torch.from_numpy(x), y


def with_update_noise(strategy: FlameStrategy, updates: UpdateSettings, sampled: int) -> Strategy:
    """``strategy``, or (FLAME_UPDATE_NOISE) each of the ``sampled`` regions' updates clipped to
    FLAME_UPDATE_CLIP and Gaussian noise added to the aggregate."""
    if updates.update_noise <= 0:
        return strategy
    return ClippedNoisy(
        strategy,
        noise_multiplier=updates.update_noise,
        clipping_norm=updates.update_clip,
        num_sampled_clients=sampled,
    )


def nothing_trained(strategy: FlameStrategy, round_timeout: float, rounds: int) -> RunFailed:
    errors = sorted(strategy.errors)
    reason = errors[0][:300] if errors else (
        f"no reply within FLAME_ROUND_TIMEOUT={round_timeout:g} s: raise it if a "
        "region's round takes longer, or check that the regions are up"
    )  # fmt: skip
    more = f"; and {len(errors) - 1} other reasons above" if len(errors) > 1 else ""
    return NothingTrainedError(
        f"no region returned a model update in any of the {rounds} "
        f"rounds ({reason}{more}); no model was saved"
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """One federated run. A run it refuses for its settings or data fails with BAD_INPUT
    first in its reason (a failed run's reason starts otherwise)."""
    try:
        serve(grid, context)
    except (SettingsError, FileNotFoundError, ValueError) as err:
        raise SettingsError(f"{BAD_INPUT}{err}") from err


@dataclass
class ServerRun:
    """What the ServerApp holds through one run."""

    model: FraudMLP  # the global model (its weights: the initial model, then the saved one)
    card: ModelCard
    strategy: FlameStrategy
    round_end: RoundEnd  # what ends each round: the server's evaluation and the checkpoint
    tracker: Tracker
    learning_knobs: str  # the settings to lower when training learnt nothing
    dp_delta: float | None  # a DP run's δ (its registered model's tags), else None


def serve(grid: Grid, context: Context) -> None:
    settings = server_settings(context.run_config)
    setup_logging(verbose=settings.flower_dumps)
    login(settings)  # this process's MLflow account (FLAME_MLFLOW_CREDENTIALS), read once
    torch.set_num_threads(settings.torch_threads)
    out, resumed = run_folder(settings)
    done = resumed.state.round if resumed else 0  # rounds completed before this run
    run = set_up(settings, out, resumed)
    initial = ArrayRecord(run.model.state_dict())
    if done >= settings.num_server_rounds:
        log.info("All %d rounds were already complete; saving the final model", done)
        run.round_end(0, initial)
        return finish(out, run, initial)
    wait_for_regions(grid, len(settings.regions), settings.join_timeout)
    polling.cap_pull_backoff(settings.poll_interval)
    rounds = settings.num_server_rounds - done
    try:
        sampled = max(1, round(settings.fraction_train * len(settings.regions)))
        runner = with_update_noise(run.strategy, settings, sampled)
        packed = PackedGrid(polling.PromptGrid(grid, settings.poll_interval))
        result = start(runner, packed, initial, run.round_end, rounds, settings.round_timeout)
    except RunFailed:
        run.tracker.close("FAILED")
        raise
    if run.strategy.trained_rounds == 0:
        run.tracker.close("FAILED")
        raise nothing_trained(run.strategy, settings.round_timeout, rounds)
    finish(out, run, result.arrays or initial)


def set_up(settings: FlameSettings, out: Path, resumed: Resumed | None) -> ServerRun:
    """The run's test set, initial model (warm start, or a resumed run's checkpoint),
    tracker, strategy and round end."""
    done = resumed.state.round if resumed else 0
    x_test, y_test = test_set(settings.data_spec(), out)
    log.info(privacy_line(settings))
    card = new_card(settings.drop_balance_features, settings.hidden_sizes, settings.threshold)
    card.alert_rate = settings.alert_rate
    model = initial_model(
        card, settings.seed, settings.pretrain_rows, settings.batch_size, settings.learning_rate,
        settings.cache_dir, warm=resumed is None,
    )  # fmt: skip
    one_message = one_message_per_round(settings.evaluate_in_train, settings.fraction_evaluate)
    logged = evaluated_through(one_message, done, settings.num_server_rounds) if resumed else None
    tracker = Tracker(settings, out, run_params(settings, len(y_test)),
                      done if resumed else None, evaluated_through=logged)  # fmt: skip
    strategy = build_strategy(settings, settings, settings.regions, settings.codec, tracker)
    evaluator = ServerEvaluator(model, (x_test, y_test), settings.alert_rate)
    round_end = RoundEnd(evaluator, strategy, out, checkpoint.fixed_settings(settings))
    if resumed:
        resumed.restore(model, strategy)
    else:
        tracker.dataset("server-test", len(y_test), int(y_test.sum()), evaluator.test_digest)
    delta = settings.dp_delta if settings.dp else None
    return ServerRun(model, card, strategy, round_end, tracker, settings.learning_knobs(), delta)


def start(
    runner: Strategy, grid: PackedGrid, initial: ArrayRecord, round_end: RoundEnd, rounds: int,
    timeout: float,
) -> Result:  # fmt: skip
    """Flower's round loop over the ``rounds`` left."""
    return runner.start(
        grid=grid,  # type: ignore[arg-type]
        initial_arrays=initial,
        num_rounds=rounds,
        timeout=timeout,
        train_config=ConfigRecord(),  # the run's settings are its run config, not a message's
        evaluate_config=ConfigRecord(),
        evaluate_fn=round_end,
    )


def wait_for_regions(grid: Grid, want: int, join_timeout: float) -> None:
    """Give all ``want`` regions FLAME_JOIN_TIMEOUT to connect before round 1, then go with who
    is there (at least FLAME_MIN_REGIONS, which Flower's sampling waits for)."""
    deadline = time.monotonic() + join_timeout
    while len(list(grid.get_node_ids())) < want and time.monotonic() < deadline:
        time.sleep(1)
    have = len(list(grid.get_node_ids()))
    if have < want:
        log.warning("starting with %d of %d regions connected after %.0f s",
                    have, want, join_timeout)  # fmt: skip


def model_tags(digest: str, epsilon: float, dp_delta: float | None) -> dict[str, str]:
    """What a registered model version records besides its card: the test set it was scored
    on, and its privacy (DP runs: ``dp_delta`` set)."""
    tags = {"test_set": digest}
    if dp_delta is not None:
        tags |= {"dp_epsilon": f"{epsilon:.4f}", "dp_delta": f"{dp_delta:g}"}
    return tags


def operating_point(card: ModelCard) -> plots.OperatingPoint | None:
    """The alert budget's point on the test set's PR curve (a run with FLAME_ALERT_RATE)."""
    if not card.alert_rate or "precision_at_budget" not in card.metrics:
        return None
    m = card.metrics
    return plots.OperatingPoint(
        m["recall_at_budget"], m["precision_at_budget"], card.alert_rate, m["alert_rate_at_budget"]
    )


def finish(out: Path, run: ServerRun, arrays: ArrayRecord) -> None:
    """Save the selected global model (``strategy.selected``, else ``arrays``) with its card,
    plots and artifacts."""
    card, evaluator, tracker = run.card, run.round_end.evaluator, run.tracker
    chosen = run.strategy.selected
    arrays = selected_arrays(card, run.strategy, arrays)
    scored = evaluator.score(arrays, card.threshold, budget=chosen is not None)
    alive = run.round_end.alive
    if evaluator.constant() or (alive and not any(alive.values())):
        tracker.close("FAILED")
        which = "the model to save" if evaluator.constant() else "every trained round's model"
        raise RunLearntNothing(
            f"{which} gives all {len(evaluator.logits)} server test rows the same score (a dead "
            f"network: training learnt nothing); lower {run.learning_knobs}; no model "
            "was saved"
        )
    card.metrics = {k: float(v) for k, v in scored.items()}
    run.model.load_state_dict(arrays.to_torch_state_dict())
    save_model(out / "model.pt", run.model, card)
    tracker.log(SELECTED, card.selected_round, "evaluate", card.metrics)
    artifacts = [out / "model.pt"]
    artifacts += plots.curves(
        evaluator.logits, evaluator.y, out, "server test set", operating_point(card)
    )
    if (table := tracker.close_csv()) is not None:
        artifacts += [table, plots.rounds(table, out)]
    tracker.artifacts(artifacts)
    tags = model_tags(evaluator.test_digest, run.strategy.epsilon, run.dp_delta)
    tracker.model(out / "model.pt", card, tags)
    tracker.close()
    log.info("Saved the model to %s (threshold %.6f)", out / "model.pt", card.threshold)


def selected_arrays(card: ModelCard, strategy: FlameStrategy, last: ArrayRecord) -> ArrayRecord:
    """The model selection kept (its round, threshold and validation scores onto ``card``),
    else ``last`` at the strategy's threshold."""
    chosen = strategy.selected
    if chosen is None:
        card.threshold = strategy.threshold
        return last
    card.threshold, card.selected_round = chosen.threshold, chosen.round
    card.validation_score_counts = chosen.val_counts
    card.validation_score_edges = fm.probability_edges(len(chosen.val_counts))
    log.info(
        "Selected round %d: pooled client validation PR-AUC %.4f", chosen.round, chosen.val_pr_auc
    )
    return chosen.arrays
