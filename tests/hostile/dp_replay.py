"""Seed replay on DP-SGD: a coordinator strips the regions' DP noise off their updates.

A region seeds torch's global generator with ``region_seed(seed, region, round)`` (public:
it depends on the run settings and the region's name only) before Opacus draws the Poisson
sample and the Gaussian noise, so whoever knows the seed can draw the same noise. The attacker
picks run settings that make the replay exact: DP-SGD (plain SGD, no Adam state), a fixed σ,
one logical step per round at sampling rate 1 (so the update is linear in the noise), one round.
It replays that step on dummy rows of the size the region reports, with σ and with σ = 0: their
difference is the region's noise, which it subtracts from the region's update.

Writes ``<HOSTILE_OUT>/<region>.npz``: ``initial.*``, ``received.*`` and ``recovered.*`` (the
noise-free update the attacker claims, as weights), ``rows`` and ``seed``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from flame.fl.client_app import dp_basis, dp_config, region_seed, training_plan
from flame.fl.packing import PackedGrid
from flame.fl.privacy import dp_train
from flame.fl.protocol import INFO_KEY
from flame.log import setup_logging
from flame.model.net import FraudMLP
from flame.settings import FlameSettings, load_settings
from tests.hostile import out_folder, task, wait_for_nodes

# run settings the attacker submits as the run config (FLAME_DP_BATCH_SIZE beyond any region's
# rows: q = 1); ``attack_env`` is them as `flame launch` reads them
ATTACK = {
    "dp": True, "dp_optimizer": "sgd", "dp_noise_multiplier": 1.0, "dp_target_epsilon": 0.0,
    "dp_sample_rate": 0.0, "dp_batch_size": 10**9, "min_local_steps": 1, "local_epochs": 1,
    "lr_schedule": "constant", "num_server_rounds": 1, "codec": "none", "update_noise": 0.0,
}  # fmt: skip
ROUND = 1
app = ServerApp()
log = logging.getLogger("flame.hostile")  # under flame: setup_logging shows it


def attack_env() -> dict[str, str]:
    return {f"FLAME_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in ATTACK.items()}  # fmt: skip


def attack_settings(run_config: dict[str, object] | None = None) -> FlameSettings:
    """The run's settings, which the regions train with too (the run config ``attack_env``
    made); refuses to attack a run of other settings."""
    settings = load_settings(run_config)
    wrong = {k: getattr(settings, k) for k, v in ATTACK.items() if getattr(settings, k) != v}
    if wrong:
        raise ValueError(f"submit the run with attack_env(): the run config has {wrong}")
    return settings


def new_model(settings: FlameSettings, width: int) -> FraudMLP:
    torch.manual_seed(settings.seed)
    return FraudMLP(width, settings.hidden_sizes)


def one_round(
    settings: FlameSettings, model: FraudMLP, x: torch.Tensor, y: torch.Tensor,
    pos_weight: float, seed: int, sigma: float,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The region's round-1 DP training of ``model`` (a copy) with noise multiplier ``sigma``,
    its Poisson sampling and noise drawn from ``seed``, the region's public seed (the noise's
    seed before regions kept a secret; the coordinator knows nothing closer to the key now)."""
    model = copy.deepcopy(model)
    config = dataclasses.replace(dp_config(settings), noise_multiplier=sigma)
    plan = training_plan(settings, len(x))
    dp_train(
        model, x, y, config=config, plan=plan, rnd=ROUND, history=[], pos_weight=pos_weight,
        charge=lambda *release: (0.0, seed.to_bytes(32, "big")),  # the best guess it has
        basis=lambda: dp_basis(model, settings),  # FLAME_DP_SUBSPACE: public, the attacker has it
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def denoised(
    settings: FlameSettings, model: FraudMLP, received: dict[str, torch.Tensor], rows: int,
    seed: int,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """``received`` minus the noise replayed on ``rows`` dummy rows."""
    width = model.net[0].in_features
    x, y = torch.zeros(rows, width), torch.zeros(rows)
    noisy = one_round(settings, model, x, y, 1.0, seed, settings.dp_noise_multiplier or 0.0)
    clean = one_round(settings, model, x, y, 1.0, seed, 0.0)
    return {k: received[k] - (noisy[k] - clean[k]) for k in received}


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()
    settings = attack_settings(context.run_config)
    torch.set_num_threads(settings.torch_threads)
    from flame.data.features import feature_names

    model = new_model(settings, len(feature_names(settings.drop_balance_features)))
    initial = ArrayRecord(model.state_dict())
    nodes = wait_for_nodes(grid, len(settings.regions))
    messages = [task(initial, ROUND, node) for node in nodes]
    replies = PackedGrid(grid).send_and_receive(messages, timeout=settings.round_timeout)
    out = out_folder()
    for reply in replies:
        if reply.has_error():
            log.error("a region refused: %s", reply.error.reason)
            continue
        region = str(reply.content.config_records[INFO_KEY]["region"])
        rows = int(reply.content.metric_records["metrics"]["num_examples"])
        seed = region_seed(settings.seed, region, ROUND)
        received = reply.content.array_records["arrays"].to_torch_state_dict()
        recovered = denoised(settings, model, received, rows, seed)
        weights = {"initial": model.state_dict(), "received": received, "recovered": recovered}
        flat = {f"{name}.{k}": v.numpy() for name, sd in weights.items() for k, v in sd.items()}
        np.savez(out / f"{region}.npz", rows=rows, seed=seed, **flat)
        log.info("%s: %d rows, seed %d: noise stripped off its update", region, rows, seed)
