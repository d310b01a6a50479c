"""FedAvg that pools fraud metrics correctly, tracks every client and tunes the threshold."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from flame.fl.compression import server_decode
from flame.fl.protocol import DIVERGED_REASON, EVALUATE_FIRST, INFO_KEY, VALIDATION_KEY, RunDiverged
from flame.model import metrics as fm
from flame.settings import RobustnessSettings, TrainingSettings
from flame.track.tracking import CLIENTS, Tracker, client_kind

AGGREGATORS: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
}

log = logging.getLogger("flame.fl.strategy")
T = TypeVar("T")


def region_of(content: RecordDict) -> str:
    info = content.config_records.get(INFO_KEY)
    return str(info["region"]) if info and "region" in info else "unknown"


def by_region(replies: Iterable[Message]) -> list[Message]:
    """Replies in region order (errors last), whatever order they arrived in: floating-point
    sums then add up the same way every run."""
    return sorted(
        replies, key=lambda m: (m.has_error(), "" if m.has_error() else region_of(m.content))
    )


def metric_record(content: RecordDict) -> MetricRecord:
    return next(iter(content.metric_records.values()))


def train_aggregate(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted mean of losses; ε is the largest any region has spent (not an average);
    bytes are summed."""
    out = aggregate_metricrecords(records, weight_key)
    for key in ("bytes_sent", "bytes_received"):
        if key in out:
            out[key] = sum(float(metric_record(r)[key]) for r in records)
    if "epsilon" in out:
        out["epsilon"] = max(float(metric_record(r)["epsilon"]) for r in records)
    return out


def pooled_evaluate(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Sum confusion counts and score histograms across regions (see flame.model.metrics)."""
    return MetricRecord(fm.pool(metric_record(r) for r in records))


@dataclass
class Selected:
    """The round whose global model is kept: its weights, tuned threshold and validation PR-AUC."""

    round: int
    arrays: ArrayRecord
    threshold: float
    val_pr_auc: float
    val_counts: list[float] = field(default_factory=list)  # its pooled validation histogram


@dataclass
class RoundClock:
    """Flower counts a run's rounds from 1; a run resumed after round ``done`` continues the
    whole run's count, so its round r is round ``done + r``."""

    done: int = 0  # rounds completed before this run started (a resume)

    def __call__(self, server_round: int) -> int:
        return self.done + server_round

    def resumed_from(self, rnd: int) -> bool:
        """Whether round ``rnd``'s model is the one this run resumed (the earlier run's last)."""
        return self.done > 0 and rnd == self.done

    def made(self, rnd: int) -> bool:
        """Whether round ``rnd``'s model was trained by this run (not the one it resumed)."""
        return rnd > self.done


def whole_run_round(method: Callable[..., T]) -> Callable[..., T]:
    """A Flower entry point of the strategy, called with the whole run's round."""

    @functools.wraps(method)
    def called(self: FlameStrategy, server_round: int, *args: Any) -> T:
        return method(self, self.clock(server_round), *args)

    return called


class FlameStrategy(FedAvg):
    """Any FedAvg-family rule + per-region tracking, pooled client metrics, tuned threshold.

    Used as a mixin in front of the chosen aggregator (see ``build_strategy``).

    With ``threshold == 0`` the threshold is re-chosen every round on the pooled client
    *validation* scores: the cut whose alert rate is closest to ``alert_rate``, or with
    ``alert_rate == 0`` the F1-optimal cut; the server's test set is never used to choose it.
    Every client row of round r carries the alert figures at the threshold round r chose
    (``flame.model.metrics.alert_figures``).

    ``selected`` is the model to save: with ``select_best`` the latest round whose pooled client
    validation PR-AUC is within one standard error of the best so far (``fm.pr_auc_margin``: a
    later round that scores the same within the validation rows' resolution is kept, as it has
    seen more training; small validation sets often score 1.0 from round 1 on), else the last
    evaluated round.

    With ``evaluate_in_train`` (one message per region per round) round r's train task asks each
    region to score the model it carries (round r-1's) before training it, and the reply brings
    both; round r-1's client metrics, threshold and selection are settled when those replies
    are in. Only the last round's model gets an evaluate message.
    """

    def __init__(
        self,
        tracker: Tracker,
        threshold: float = 0.0,
        codec: str = "none",
        regions: Iterable[str] = (),
        select_best: bool = True,
        evaluate_in_train: bool = False,
        last_round: int = 0,
        alert_rate: float = 0.0,
        **kwargs: object,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            evaluate_metrics_aggr_fn=pooled_evaluate,
            train_metrics_aggr_fn=train_aggregate,
            **kwargs,
        )
        self.tracker = tracker
        self.codec = codec
        self.round_arrays: ArrayRecord | None = None
        self.auto_threshold = threshold == 0.0
        self.threshold = threshold or 0.5
        self.alert_rate = alert_rate
        self.regions = list(regions)
        self.clock = RoundClock()  # a resumed run's rounds continue the whole run's count
        self.select_best = select_best
        self.eval_arrays: ArrayRecord | None = None
        self.selected: Selected | None = None
        self.best_val: float | None = None  # the best pooled validation PR-AUC so far
        self.trained_rounds = 0  # rounds in which at least one region's update was aggregated
        self.epsilon = 0.0  # the largest whole-run DP ε any region has reported
        self.errors: set[str] = set()  # the first line of every region error so far
        self.evaluate_in_train = evaluate_in_train
        self.last_round = last_round  # the run's final round (its model gets an evaluate task)
        # per round: the threshold tuned on its model's client validation, its pooled metrics
        self.scored: dict[int, tuple[float, MetricRecord | None]] = {}
        self._validated = -1  # the last round whose train replies' validation was taken

    def waits_for_next_round(self, server_round: int) -> bool:
        """Whether this round's model is scored by the regions only in the next round."""
        return scored_next_round(self.evaluate_in_train, server_round, self.last_round)

    def roll_call(self, server_round: int, stage: str, replies: list[Message]) -> dict[str, Any]:
        """Which regions answered this phase; logs the missing ones (lost, failed or absent)."""
        answered = {region_of(m.content) for m in replies if not m.has_error()}
        missing = sorted(set(self.regions) - answered)
        errors = [m.error.reason for m in replies if m.has_error()]
        self.errors.update(e.splitlines()[0] for e in errors if e)
        if diverged := [e.splitlines()[0] for e in errors if DIVERGED_REASON in e]:
            raise RunDiverged(f"round {server_round} {stage}: {diverged[0]}; no model was saved")
        if missing:
            log.warning(
                "round %d %s: no reply from %s%s; continuing with %s",
                server_round, stage, ", ".join(missing),
                f" ({'; '.join(e.splitlines()[0] for e in errors)})" if errors
                else " within the round's time-out (FLAME_ROUND_TIMEOUT)",
                ", ".join(sorted(answered)) or "nobody",
            )  # fmt: skip
        return {"regions": len(answered), "missing": ";".join(missing)}

    @whole_run_round
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.waits_for_next_round(server_round):
            return []  # the next round's train tasks score this model
        config["threshold"] = self.threshold
        self.eval_arrays = arrays
        return super().configure_evaluate(server_round, arrays, config, grid)

    @whole_run_round
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.round_arrays = arrays
        config[EVALUATE_FIRST] = self.evaluate_in_train and server_round > 1
        if config[EVALUATE_FIRST]:
            config["threshold"] = self.threshold
            self.eval_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def take_validation(self, server_round: int, replies: list[Message]) -> None:
        """Settle round ``server_round - 1`` from the validation metrics in these train replies
        (``evaluate_in_train``; once per round)."""
        if not self.evaluate_in_train or server_round <= 1 or self._validated == server_round:
            return
        self._validated = server_round
        scored = [
            (region_of(m.content), m.content.pop(VALIDATION_KEY))
            for m in replies
            if not m.has_error() and VALIDATION_KEY in m.content
        ]
        missing = sorted(set(self.regions) - {region for region, _ in scored})
        roll = {"regions": len(scored), "missing": ";".join(missing)}
        self.evaluated(server_round - 1, scored, roll)  # type: ignore[arg-type]

    @whole_run_round
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_region(replies)  # a fixed order: the same seed gives the same model
        self.take_validation(server_round, replies)
        roll = self.roll_call(server_round, "train", replies)
        totals = {"bytes_sent": 0.0, "bytes_received": 0.0}
        kept = [m for m in replies if m.has_error() or self.took_update(server_round, m, totals)]
        arrays, metrics = super().aggregate_train(server_round, kept)
        if arrays is not None and not all(np.isfinite(a.numpy()).all() for a in arrays.values()):
            raise RunDiverged(f"round {server_round}: the aggregated model has non-finite "
                              "weights; lower the learning rate; no model was saved")  # fmt: skip
        self.trained_rounds += arrays is not None
        row: dict[str, Any] = roll | totals
        if metrics is not None:
            row |= {"loss": metrics["train_loss"]}
            row |= {"epsilon": metrics["epsilon"]} if "epsilon" in metrics else {}
        self.tracker.log(CLIENTS, server_round, "train", row)
        return arrays, metrics

    def took_update(self, server_round: int, msg: Message, totals: dict[str, float]) -> bool:
        """Log one region's train reply (its loss, ε, bytes; in round 1 its data's digest) and
        decode its update; False if the region sat out (its privacy budget is spent)."""
        record = metric_record(msg.content)
        row = {"loss": record["train_loss"], "num_examples": record["num_examples"]}
        if "epsilon" in record:
            row["epsilon"] = record["epsilon"]
            self.epsilon = max(self.epsilon, float(record["epsilon"]))
        for key in totals:
            row[key] = record[key]
            totals[key] += float(record[key])
        region = region_of(msg.content)
        self.tracker.log(client_kind(region), server_round, "train", row)
        if "data_digest" in record:  # round 1: what the region trains on (no rows)
            digest = f"{int(record['data_digest']):013x}"
            self.tracker.dataset(
                f"region-{region}", int(record["num_examples"]), int(record["num_frauds"]), digest
            )
        if record.get("dp_exhausted", 0):
            log.warning("round %d: region %s sat out, its privacy budget is spent",
                        server_round, region)  # fmt: skip
            return False
        if self.codec != "none" and self.round_arrays is not None:
            msg.content["arrays"] = server_decode(
                msg.content["arrays"], self.round_arrays, self.codec
            )
        return True

    @whole_run_round
    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = by_region(replies)
        if not replies and self.waits_for_next_round(server_round):
            return None  # scored in the next round's train replies
        roll = self.roll_call(server_round, "evaluate", replies)
        scored = [(region_of(m.content), metric_record(m.content)) for m in replies
                  if not m.has_error()]  # fmt: skip
        return self.evaluated(server_round, scored, roll)

    def evaluated(
        self, server_round: int, scored: list[tuple[str, MetricRecord]], roll: dict[str, Any]
    ) -> MetricRecord | None:
        """Log each region's and the pooled validation metrics of round ``server_round``'s
        model, tune the threshold on them and consider the model for saving."""
        records = [RecordDict({"metrics": metrics}) for _, metrics in scored]
        pooled = pooled_evaluate(records, self.weighted_by_key) if records else None
        sent = self.threshold  # the threshold the regions scored at
        if pooled is not None and self.auto_threshold:
            self.threshold = fm.chosen_threshold(pooled, self.alert_rate)
        for region, metrics in scored:
            record = dict(metrics) | fm.from_confusion(*(metrics[k] for k in fm.COUNTS))
            alerts = fm.alert_figures(metrics, self.threshold, self.alert_rate)
            self.tracker.log(client_kind(region), server_round, "evaluate", record | alerts)
        if pooled is None:
            self.tracker.log(CLIENTS, server_round, "evaluate", roll)
        else:
            alerts = fm.alert_figures(pooled, self.threshold, self.alert_rate)
            row = dict(pooled) | alerts | {"threshold": sent} | roll
            self.tracker.log(CLIENTS, server_round, "evaluate", row)
            counts = [float(v) for v in np.add(pooled["hist_pos"], pooled["hist_neg"])]
            frauds = float(np.sum(pooled["hist_pos"]))
            self.consider(server_round, float(pooled["pr_auc"]), counts, frauds)
        self.scored[server_round] = (self.threshold, pooled)
        return pooled

    def consider(
        self, server_round: int, val_pr_auc: float, val_counts: list[float], frauds: float = 0.0
    ) -> None:
        """Keep this round's model if it is the one to save (see the class docstring)."""
        if self.eval_arrays is None:
            return
        if self.best_val is None and self.selected is not None:  # resumed: its figure
            self.best_val = self.selected.val_pr_auc
        if not math.isnan(val_pr_auc) and (
            self.best_val is None or math.isnan(self.best_val) or val_pr_auc > self.best_val
        ):
            self.best_val = val_pr_auc
        best = self.best_val
        close = (
            best is None or math.isnan(best) or val_pr_auc >= best - fm.pr_auc_margin(best, frauds)
        )
        if not self.select_best or close:
            self.selected = Selected(
                server_round, self.eval_arrays, self.threshold, val_pr_auc, val_counts
            )


class ClippedNoisy(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side update clipping and noise (FLAME_UPDATE_NOISE). It skips a round with
    an error reply before Flame's strategy sees the replies, so the regions' validation metrics
    in them are taken first."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_region(replies)
        strategy: FlameStrategy = self.strategy  # type: ignore[assignment]
        strategy.take_validation(strategy.clock(server_round), replies)
        return super().aggregate_train(server_round, replies)


def one_message_per_round(evaluate_in_train: bool, fraction_evaluate: float) -> bool:
    """FLAME_EVALUATE_IN_TRAIN, in a run whose regions evaluate at all."""
    return evaluate_in_train and fraction_evaluate > 0


def scored_next_round(one_message: bool, server_round: int, last_round: int) -> bool:
    """Whether round ``server_round``'s model is scored by the regions only in the next round."""
    return one_message and 0 < server_round < last_round


def evaluated_through(one_message: bool, done: int, last_round: int) -> int:
    """The last round whose evaluation is logged once round ``done`` is checkpointed."""
    return done - 1 if scored_next_round(one_message, done, last_round) else done


def build_strategy(
    training: TrainingSettings, robustness: RobustnessSettings, regions: list[str], codec: str,
    tracker: Tracker,
) -> FlameStrategy:  # fmt: skip
    """The configured aggregation rule (Flower's built-ins) with Flame's tracking on top."""
    base = AGGREGATORS[robustness.aggregation]
    cls = (
        FlameStrategy
        if base is FedAvg
        else type(f"Flame{base.__name__}", (FlameStrategy, base), {})
    )
    n = len(regions)
    least = min(training.min_regions, n)  # never wait for more regions than this
    kwargs: dict[str, Any] = {
        "fraction_train": training.fraction_train,
        "fraction_evaluate": training.fraction_evaluate,
        "min_train_nodes": least,
        "min_evaluate_nodes": least,
        "min_available_nodes": least,
        "weighted_by_key": "num_examples",  # one spelling per metric key: the CSV's
    }
    if base in (Krum, MultiKrum):
        kwargs["num_malicious_nodes"] = robustness.num_malicious
    if base is MultiKrum:
        kwargs["num_nodes_to_select"] = max(1, n - robustness.num_malicious)
    if base is FedTrimmedAvg:
        kwargs["beta"] = robustness.trim_beta
    one_message = one_message_per_round(training.evaluate_in_train, training.fraction_evaluate)
    strategy = cls(
        tracker, training.threshold, codec, regions,
        select_best=training.model_selection == "best-val",
        evaluate_in_train=one_message, last_round=training.num_server_rounds,
        alert_rate=training.alert_rate, **kwargs,
    )  # fmt: skip
    return strategy  # type: ignore[return-value]
