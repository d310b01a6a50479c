"""Flame ClientApp: one region's training and validation, on Flower's Message API.

The region comes from node config ``region`` (deployment) or the simulation's ``partition-id``
(index into FLAME_REGIONS). Data comes from node config ``data-path`` (the region's own file)
or from the prepared partition cache. Raw rows never leave this process: only model weights,
counts, losses and score histograms are sent.

Every message runs in a fresh process in deployment, so the import path is kept light: torch,
Flower and numpy only. The region's features come from the ``.npy`` cache (built by
``flame data split`` or on first use); pandas, pyarrow, scikit-learn and Opacus are imported only
when the cache is missing or DP is on.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flame.data.cache import Split, cached_region
from flame.data.features import amounts
from flame.data.spec import DataSpec
from flame.fl.ledger import EVALUATE, TRAIN, Ledger, Release
from flame.fl.mods import refusals_as_errors, simulated_attack, update_codec
from flame.fl.packing import packed_arrays
from flame.fl.protocol import EVALUATE_FIRST, INFO_KEY, VALIDATION_KEY, Refusal
from flame.fl.task import region_name, region_seed, task_settings
from flame.log import setup_logging
from flame.model import metrics as fm
from flame.model.inference import layer_params, mlp_logits
from flame.settings import FlameSettings


@functools.cache
def _process_start() -> float:
    """Wall-clock start of this process (Linux /proc, 10 ms), else when first asked."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


if TYPE_CHECKING:
    import torch

    from flame.fl.privacy import DPConfig, RegionPolicy
    from flame.model.net import FraudMLP
    from flame.model.train import Plan

app = ClientApp(mods=[packed_arrays, refusals_as_errors, update_codec, simulated_attack])
log = logging.getLogger("flame.client")


@lru_cache(maxsize=4)
def region_arrays(data: DataSpec, region: str, data_path: str) -> dict[str, Split]:
    """Train and validation arrays of one region, loaded once per process."""
    arrays = cached_region(data, region, data_path)
    if arrays is None:  # first use: build the cache (imports pandas/pyarrow once)
        from flame.data.partition import file_arrays, region_arrays

        arrays = file_arrays(Path(data_path), data) if data_path else region_arrays(data, region)
    return arrays


def _setup(msg: Message, context: Context, split: str) -> tuple[FlameSettings, str, Split]:
    setup_logging()
    settings = task_settings(context)
    region = region_name(context, settings.regions)
    data_path = str(context.node_config.get("data-path", ""))
    return settings, region, region_arrays(settings.data_spec(), region, data_path)[split]


def _model(msg: Message, settings: FlameSettings) -> FraudMLP:
    import torch

    from flame.data.features import feature_names
    from flame.model.net import FraudMLP

    torch.set_num_threads(settings.torch_threads)
    model = FraudMLP(len(feature_names(settings.drop_balance_features)), settings.hidden_sizes)
    received: ArrayRecord = msg.content["arrays"]
    want = {k: list(v.shape) for k, v in model.state_dict().items()}
    got = {k: list(received[k].shape) for k in received}
    if got != want:
        layer = next(k for k in [*want, *got] if got.get(k) != want.get(k))
        raise Refusal(
            f"the received model is refused: its {layer} is {got.get(layer, 'missing')}, "
            f"this run's model has {want.get(layer, 'no such weight')}"
        )
    model.load_state_dict(received.to_torch_state_dict())
    return model


def received_weights(msg: Message, columns: int) -> dict[str, np.ndarray]:
    """The task's global model as numpy arrays, refused in one line unless it is a FraudMLP
    for rows of ``columns`` features."""
    received: ArrayRecord = msg.content["arrays"]
    weights = {k: received[k].numpy() for k in received}
    try:
        layer_params(weights, columns)
    except ValueError as err:
        raise Refusal(f"the received model is refused: {err}") from None
    return weights


def _uptime() -> float:
    """Seconds since this process started (deployment starts one per message)."""
    return time.time() - _process_start()


def _reply(msg: Message, region: str, content: dict[str, object]) -> Message:
    content[INFO_KEY] = ConfigRecord({"region": region})
    return Message(RecordDict(content), reply_to=msg)  # type: ignore[arg-type]


def data_summary(x: np.ndarray, y: np.ndarray) -> dict[str, int]:
    """What the server records about a region's training rows (MLflow dataset input): their
    count, fraud count and a 52-bit content digest. Never the rows."""
    digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    digest.update(np.ascontiguousarray(x).tobytes())
    return {"num_frauds": int(y.sum()), "data_digest": int(digest.hexdigest()[:13], 16)}


def training_plan(settings: FlameSettings, rows: int) -> Plan:
    """This region's steps per round and learning-rate schedule (DP or not)."""
    from flame.model.train import Plan

    if settings.dp:
        batch, lr = round(dp_config(settings).rate(rows) * rows), settings.dp_learning_rate
    else:
        batch, lr = settings.batch_size, settings.learning_rate
    return Plan.for_rows(
        rows, batch, settings.local_epochs, settings.min_local_steps,
        settings.num_server_rounds, lr, settings.lr_schedule,
    )  # fmt: skip


def dp_config(settings: FlameSettings) -> DPConfig:
    from flame.fl.privacy import DPConfig

    return DPConfig(
        noise_multiplier=settings.dp_noise_multiplier,
        target_epsilon=settings.dp_target_epsilon,
        delta=settings.dp_delta,
        max_grad_norm=settings.dp_max_grad_norm,
        optimizer=settings.dp_optimizer,
        batch_size=settings.dp_batch_size,
        sample_rate=settings.dp_sample_rate,
        adambc_floor=settings.dp_adambc_floor,
    )


def region_policy(settings: FlameSettings) -> RegionPolicy:
    from flame.fl.privacy import RegionPolicy

    return RegionPolicy(
        require_dp=settings.policy_require_dp, max_epsilon=settings.policy_max_epsilon,
        max_delta=settings.policy_max_delta, lifetime_epsilon=settings.policy_lifetime_epsilon,
        max_evaluations=settings.policy_max_evaluations,
        histogram_bins=settings.policy_histogram_bins, eval_noise=settings.policy_eval_noise,
    )  # fmt: skip


def enforce_policy(settings: FlameSettings, rows: int, plan: Plan, adversary: bool) -> None:
    """This region's own policy (node settings) against what the run asks for."""
    from flame.fl.privacy import check_run, check_update_policy

    if settings.policy_codecs or settings.policy_attacks:
        check_update_policy(
            settings.codec, settings.attack if adversary else None, settings.policy_codecs,
            settings.policy_attacks,
        )  # fmt: skip
    check_run(settings.dp, dp_config(settings), rows, plan, region_policy(settings))


class RegionState:
    """This region's private state folder for one task: its secret and its privacy ledger."""

    def __init__(self, settings: FlameSettings, region: str, run_id: str, rnd: int) -> None:
        from flame.fl.region_secret import region_folder

        self.folder = region_folder(settings.state_dir, region)
        self.settings, self.region, self.run_id, self.round = settings, region, run_id, rnd

    @classmethod
    def of_task(cls, msg: Message, settings: FlameSettings, region: str) -> RegionState:
        rnd = int(msg.content["config"]["server-round"])
        return cls(settings, region, str(msg.metadata.run_id), rnd)

    def key(self, release: int) -> bytes:
        """A key only this region can know (its secret), one per release in its ledger: no
        two answers share noise, so none can be subtracted from another."""
        from flame.fl.region_secret import derived_key, load_secret

        return derived_key(load_secret(self.folder), self.run_id, self.round, release)

    def history(self, kind: str) -> list[tuple[float, float, int]]:
        """This run's earlier ``kind`` releases, as the accountant reads them."""
        from flame.fl.privacy import accounted

        with Ledger(self.folder) as ledger:
            return accounted(r for r in ledger.releases(self.run_id) if r.kind == kind)

    def charge(self, kind: str, noise: float, rate: float, steps: int) -> tuple[float, bytes]:
        """Record one release before the region answers (refused if over the region's caps);
        returns the run's ε with it and the key of its noise."""
        from flame.fl.privacy import charge

        release = Release(
            self.run_id, self.settings.app_hash, self.round, kind, noise, rate, steps,
            self.settings.dp_delta,
        )  # fmt: skip
        with Ledger(self.folder) as ledger, ledger.charging() as charging:
            epsilon, number = charge(charging, release, region_policy(self.settings))
        return epsilon, self.key(number)


def training_rows(msg: Message, context: Context) -> tuple[FlameSettings, str, Split]:
    """The region's training rows; a simulated label-flipping adversary loads them flipped."""
    settings, region, (x, y) = _setup(msg, context, "train")
    fm.require_usable_rows(
        y, f"region {region}'s training rows", "it cannot learn fraud from them and sits out"
    )
    if region in settings.adversarial_regions and settings.attack == "label_flip":
        from flame.fl.attacks import poison_labels

        y = poison_labels(y, settings.attack)
    return settings, region, (x, y)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model on this region's rows (scoring it on the validation rows first
    when the server asks: FLAME_EVALUATE_IN_TRAIN); the reply's weights are then turned into
    what travels by the mods (simulated attacks, codecs: flame/fl/mods.py)."""
    started = time.perf_counter()
    config = msg.content["config"]
    settings, region, (x, y) = training_rows(msg, context)
    model, rnd = _model(msg, settings), int(config["server-round"])
    plan = training_plan(settings, len(x))
    enforce_policy(settings, len(x), plan, region in settings.adversarial_regions)
    # after the policy check: a task the region refuses answers nothing and spends nothing
    scored = {VALIDATION_KEY: validation(msg, context)} if config.get(EVALUATE_FIRST) else {}
    state = RegionState.of_task(msg, settings, region)
    loss, extra = local_training(model, x, y, settings, state, plan)
    sent_loss = math.nan if settings.dp else loss  # not a private figure: stays in the region
    record = MetricRecord(
        {"train_loss": sent_loss, "num_examples": len(x), "steps": plan.steps, **extra}
        | (data_summary(x, y) if rnd == 1 and not settings.dp else {})
    )
    log.info(
        "%s round %d train: %d rows, %d steps in %.2f s (process up %.2f s), loss %.5f",
        region, rnd, len(x), plan.steps, time.perf_counter() - started, _uptime(), loss,
    )  # fmt: skip
    content = {"arrays": ArrayRecord(model.state_dict()), "metrics": record}
    return _reply(msg, region, content | scored)


def local_training(
    model: FraudMLP, x: np.ndarray, y: np.ndarray, settings: FlameSettings, state: RegionState,
    plan: Plan,
) -> tuple[float, dict[str, float]]:  # fmt: skip
    """This round's steps on the region's rows, DP-SGD or plain, charged to its ledger first:
    the mean loss and, under DP, the run's ε so far and whether the budget ran out."""
    import torch

    from flame.model.train import default_pos_weight, train_steps

    rnd, region = state.round, state.region
    pos_weight = settings.pos_weight or default_pos_weight(y)
    extra: dict[str, float] = {}
    if settings.dp:
        from flame.fl.privacy import dp_train

        loss, epsilon, exhausted = dp_train(
            model, torch.from_numpy(x), torch.from_numpy(y), config=dp_config(settings),
            plan=plan, rnd=rnd, history=state.history(TRAIN), pos_weight=pos_weight,
            charge=functools.partial(state.charge, TRAIN),
            basis=functools.partial(dp_basis, model, settings),
        )  # fmt: skip
        extra = {"epsilon": epsilon, "dp_exhausted": int(exhausted)}
    else:
        state.charge(TRAIN, 0.0, min(1.0, settings.batch_size / len(x)), plan.steps)
        loss = train_steps(
            model, torch.from_numpy(x), torch.from_numpy(y), plan=plan, rnd=rnd,
            batch_size=settings.batch_size, pos_weight=pos_weight,
            seed=region_seed(settings.seed, region, rnd), desc=f"{region} round {rnd}",
        )  # fmt: skip
    if not settings.dp:  # under DP the noise-free loss is private: no error may depend on it
        converging(loss, model, y, pos_weight, settings)
    return loss, extra


def dp_basis(model: FraudMLP, settings: FlameSettings) -> torch.Tensor | None:
    """The public subspace DP-SGD trains in this round (FLAME_DP_SUBSPACE), else None: from
    synthetic rows and the received model only, so it spends no budget."""
    if not settings.dp_subspace:
        return None
    from flame.fl.subspace import public_basis, public_rows
    from flame.model.train import default_pos_weight

    x, y = public_rows(settings.seed, settings.drop_balance_features)
    return public_basis(model, x, y, settings.dp_subspace, default_pos_weight(y.numpy()))


def converging(
    loss: float, model: FraudMLP, y: np.ndarray, pos_weight: float, settings: FlameSettings
) -> None:
    """A DivergedError naming the settings most likely at fault when the round diverged."""
    from flame.model.train import DivergedError, check_converging

    try:
        check_converging(loss, model, y, pos_weight)
    except DivergedError as err:
        raise DivergedError(f"{err}; lower {settings.learning_knobs()}") from None


def validation(msg: Message, context: Context) -> MetricRecord:
    """The received global model's metrics on the region's validation rows (numpy only), as
    much as the region's policy lets one answer reveal; charged to its ledger first."""
    started = time.perf_counter()
    settings, region, (x_val, y_val) = _setup(msg, context, "val")
    state = RegionState.of_task(msg, settings, region)
    noise, amounts = settings.policy_eval_noise, fraud_amounts(settings, x_val)
    # with amount sums a privatized answer is two Gaussian releases of sensitivity 1 at σ:
    # charged as one of sensitivity √2, i.e. noise multiplier σ/√2
    _, key = state.charge(EVALUATE, noise / math.sqrt(2) if amounts else noise, 1.0, 1)
    logits = mlp_logits(received_weights(msg, x_val.shape[1]), x_val)
    threshold = float(msg.content["config"]["threshold"])
    from flame.fl.region_secret import SecretStream

    normal = SecretStream(key).normal if noise else None
    bins = settings.policy_histogram_bins
    record = fm.region_metrics(logits, y_val, threshold, bins, noise, normal, amounts)
    record["threshold"] = threshold
    log.info(
        "%s evaluate: %d rows in %.2f s (process up %.2f s), PR-AUC %.4f%s",
        region, len(y_val), time.perf_counter() - started, _uptime(), record["pr_auc"],
        f" (privatized, noise {noise:g})" if noise else "",
    )  # fmt: skip
    return MetricRecord(record)  # type: ignore[arg-type]


def fraud_amounts(settings: FlameSettings, x_val: np.ndarray) -> fm.Amounts | None:
    """The validation rows' amounts for the per-bin fraud amount sums, as this region's policy
    allows: exact answers carry exact sums; privatized ones only with FLAME_POLICY_AMOUNT_CLIP
    (each amount clipped to it, noised like the counts), else none."""
    if not settings.policy_eval_noise:
        return fm.Amounts(amounts(x_val))
    if not settings.policy_amount_clip:
        log.info(
            "evaluate: no fraud amount sums in this privatized answer "
            "(region policy: FLAME_POLICY_AMOUNT_CLIP=0)"
        )
        return None
    return fm.Amounts(amounts(x_val), settings.policy_amount_clip)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Scores the global model on the region's validation rows (no torch import)."""
    region = region_name(context, task_settings(context).regions)
    return _reply(msg, region, {"metrics": validation(msg, context)})
