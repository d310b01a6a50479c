"""DP-SGD with Opacus, accounted over the whole federated run, per region.

Guarantee: record-level (ε, δ)-differential privacy for each region's training rows, with
respect to everything that region sends in all rounds together (the model updates; the
validation metrics it reports are not covered). Each region has ONE RDP accountant for the run:
its history of (noise multiplier, sample rate, steps) is kept in the SuperNode's context state
and restored every round, so the reported ε is cumulative, not one round's.

The recipe that keeps the model's value (see ``../shared/reference/quality-anchors.md``):
- DP-Adam by default (``FLAME_DP_OPTIMIZER``), large logical batches: each row is in a step's
  Poisson sample with rate ``q = FLAME_DP_BATCH_SIZE / rows`` (or ``FLAME_DP_SAMPLE_RATE``);
  Opacus's ``BatchMemoryManager`` splits a logical batch into physical ones of at most
  ``PHYSICAL_BATCH`` rows, so memory stays flat whatever q is;
- the steps of the whole run (rounds x steps per round, ``flame.model.train.Plan``) are planned up
  front, and with a target ε the noise multiplier is the one that spends exactly that budget
  over those steps;
- class weighting per sample (``BCEWithLogitsLoss(pos_weight=...)``): no oversampling or
  duplication, which would change the sensitivity the accounting assumes.

A region whose next round would exceed its budget stops training and says so.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from flame.fl.protocol import Refusal
from flame.model.train import Plan, set_lr

log = logging.getLogger("flame.fl.privacy")
STATE_KEY = "dp-accountant"
PHYSICAL_BATCH = 4096
History = list[tuple[float, float, int]]


@dataclass(frozen=True)
class DPConfig:
    """The privacy settings one region trains with."""

    noise_multiplier: float | None  # None = derived from target_epsilon; 0 = clipping only
    target_epsilon: float  # 0 = no budget
    delta: float
    max_grad_norm: float
    optimizer: str  # "adam" or "sgd"
    batch_size: int  # expected logical batch, when sample_rate is 0
    sample_rate: float = 0.0

    def rate(self, rows: int) -> float:
        return self.sample_rate or min(1.0, self.batch_size / max(rows, 1))


def load_history(state: RecordDict) -> History:
    record = state.config_records.get(STATE_KEY)
    if record is None:
        return []
    return list(zip(record["noise"], record["rate"], record["steps"], strict=True))  # type: ignore[arg-type]


def save_history(state: RecordDict, history: History) -> None:
    state[STATE_KEY] = ConfigRecord(
        {
            "noise": [float(h[0]) for h in history],
            "rate": [float(h[1]) for h in history],
            "steps": [int(h[2]) for h in history],
        }
    )


def epsilon_of(history: History, delta: float) -> float:
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # clipping without noise: no privacy
    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta))


def noise_multiplier(config: DPConfig, sample_rate: float, steps: int) -> float:
    """The configured σ, else the σ that spends exactly the target ε over ``steps``."""
    if config.noise_multiplier is not None:
        return config.noise_multiplier
    try:
        sigma = get_noise_multiplier(
            target_epsilon=config.target_epsilon,
            target_delta=config.delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    except ValueError:  # Opacus: "The privacy budget is too low."
        raise BudgetError(
            f"FLAME_DP_TARGET_EPSILON={config.target_epsilon:g} is too small for {steps} DP-SGD "
            f"steps at sampling rate {sample_rate:.3g} (δ={config.delta:g}) on this region's "
            "rows: raise it, or train fewer steps (FLAME_LOCAL_EPOCHS, FLAME_NUM_SERVER_ROUNDS)"
        ) from None
    return float(sigma)


class BudgetError(Refusal, ValueError):
    """No noise level keeps the planned DP-SGD steps within the target ε."""


class PolicyError(Refusal, RuntimeError):
    """A run asks for less privacy than a region's own policy allows."""


def check_policy(
    dp: bool, planned_epsilon: float, delta: float, require_dp: bool, max_epsilon: float,
    max_delta: float,
) -> None:  # fmt: skip
    """Refuse (one line, naming the setting) a run looser than the region's policy."""
    if (require_dp or max_epsilon) and not dp:
        raise PolicyError("region policy: this region trains only with DP-SGD (FLAME_DP=true)")
    if max_epsilon and planned_epsilon > max_epsilon * 1.01:  # Opacus's search tolerance
        raise PolicyError(
            f"region policy: the run plans ε={planned_epsilon:.3g}, this region accepts at "
            f"most ε={max_epsilon:g} (FLAME_POLICY_MAX_EPSILON)"
        )
    if dp and max_delta and delta > max_delta:
        raise PolicyError(
            f"region policy: the run asks for δ={delta:g}, this region accepts at most "
            f"δ={max_delta:g} (FLAME_POLICY_MAX_DELTA)"
        )


def check_update_policy(
    codec: str, attack: str | None, allowed_codecs: list[str], allowed_attacks: list[str]
) -> None:
    """Refuse a codec or a simulated attack (``attack`` None: this region is not an adversary)
    that the region's policy does not allow."""
    if allowed_codecs and codec not in allowed_codecs:
        raise PolicyError(
            f"region policy: the run asks for codec {codec!r}, this region sends only "
            f"{', '.join(allowed_codecs)} (FLAME_POLICY_CODECS)"
        )
    if attack is not None and allowed_attacks and attack not in allowed_attacks:
        raise PolicyError(
            f"region policy: the run makes this region simulate attack {attack!r}, this region "
            f"allows {', '.join(allowed_attacks)} (FLAME_POLICY_ATTACKS)"
        )


def planned_epsilon(config: DPConfig, rows: int, plan: Plan) -> float:
    """The whole-run ε of ``plan`` on ``rows`` rows, before any step is taken."""
    rate = config.rate(rows)
    return epsilon_of(
        [(noise_multiplier(config, rate, plan.total), rate, plan.total)], config.delta
    )


def _optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=lr)


def dp_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    config: DPConfig,
    plan: Plan,
    rnd: int,
    state: RecordDict,
    pos_weight: float,
    seed: int,
) -> tuple[float, float, bool]:
    """One round of DP training (``plan.steps`` logical steps); returns (mean loss, ε spent
    so far, budget exhausted?)."""
    history = load_history(state)
    sample_rate = config.rate(len(x))
    sigma = noise_multiplier(config, sample_rate, plan.total)
    planned = epsilon_of([*history, (sigma, sample_rate, plan.steps)], config.delta)
    spent = epsilon_of(history, config.delta)
    budget = config.target_epsilon
    if budget > 0 and planned > budget * 1.01:  # 1 % = Opacus's noise search tolerance
        log.warning(
            "privacy budget spent: ε=%.3f of %.3f; another round would reach %.3f, "
            "so this region stops training",
            spent, budget, planned,
        )  # fmt: skip
        return math.nan, spent, True

    torch.manual_seed(seed)
    logical = max(1, round(sample_rate * len(x)))
    loader = DataLoader(TensorDataset(x, y), batch_size=logical)
    engine = PrivacyEngine(accountant="rdp")
    engine.accountant.history = list(history)
    private, optimizer, loader = engine.make_private(
        module=model,
        optimizer=_optimizer(model, config.optimizer, plan.lr_at(rnd, 0)),
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=config.max_grad_norm,
        poisson_sampling=True,
    )
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    private.train()
    total, step = torch.zeros(()), 0
    with (
        warnings.catch_warnings(),  # Opacus's hooks on the input layer: harmless
        BatchMemoryManager(
            data_loader=loader, max_physical_batch_size=PHYSICAL_BATCH, optimizer=optimizer
        ) as batches,
        tqdm(total=plan.steps, desc="dp", unit="step", leave=False, mininterval=1) as bar,
    ):
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        while step < plan.steps:
            for xb, yb in batches:
                set_lr(optimizer, plan.lr_at(rnd, step))
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(private(xb), yb)  # an empty Poisson sample: a noise-only step
                loss.backward()
                total += loss.detach() if len(xb) else 0.0
                optimizer.step()
                if not optimizer._is_last_step_skipped:  # a whole logical batch is done
                    step += 1
                    bar.update()
                    if step == plan.steps:
                        break
    private._close()  # remove Opacus's hooks: the model object stays a plain nn.Module
    save_history(state, engine.accountant.history)
    epsilon = epsilon_of(engine.accountant.history, config.delta)
    log.info(
        "DP round: σ=%.3f, q=%.4f, %d steps, ε spent so far %.3f",
        sigma, sample_rate, plan.steps, epsilon,
    )  # fmt: skip
    return total.item() / max(plan.steps, 1), epsilon, False
