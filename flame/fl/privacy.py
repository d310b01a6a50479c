"""DP-SGD with Opacus, accounted per region in its privacy ledger, and the region's policy.

Guarantee: record-level (ε, δ)-differential privacy for each region's rows with respect to
everything the region releases: the model updates of every round, and (where its policy
privatizes them, ``FLAME_POLICY_EVAL_NOISE``) its evaluation answers. Every release is charged
to the region's ledger (``flame.fl.ledger``) before the region answers; the run's ε and the
region's lifetime ε are RDP compositions of the releases in it, so a restarted SuperNode or a
new run never starts from zero. The noise and the Poisson sampling come from the region's
secret (``flame.fl.region_secret``), never from the run's settings.

The recipe that keeps the model's value (see ``../shared/reference/quality-anchors.md``):
- DP-Adam by default (``FLAME_DP_OPTIMIZER``; ``adambc``: Adam with the noise's variance taken
  out of its second moment, ``AdamBC``), large logical batches: each row is in a step's
  Poisson sample with rate ``q = FLAME_DP_BATCH_SIZE / rows`` (or ``FLAME_DP_SAMPLE_RATE``);
  Opacus's ``BatchMemoryManager`` splits a logical batch into physical ones of at most
  ``PHYSICAL_BATCH`` rows, so memory stays flat whatever q is;
- the steps of the whole run (rounds x steps per round, ``flame.model.train.Plan``) are planned up
  front, and with a target ε the noise multiplier is the one that spends exactly that budget
  over those steps;
- class weighting per sample (``BCEWithLogitsLoss(pos_weight=...)``): no oversampling or
  duplication, which would change the sensitivity the accounting assumes.

A region whose next round would exceed the run's target ε stops training and says so; one whose
policy a task would break refuses it, in one line naming the setting.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from flame.fl.ledger import EVALUATE, TRAIN, Charge, Ledger, Release, ledgers
from flame.fl.protocol import Refusal
from flame.fl.region_secret import SecretStream
from flame.fl.subspace import Subspace
from flame.model.train import Plan, set_lr

log = logging.getLogger("flame.fl.privacy")
PHYSICAL_BATCH = 4096
WHAT = {TRAIN: "this round's training", EVALUATE: "this evaluation answer"}
Noisy = tuple[float, float, int]  # one training release: (σ, q, steps)
History = list[Noisy]


@dataclass(frozen=True)
class DPConfig:
    """The privacy settings one region trains with."""

    noise_multiplier: float | None  # None = derived from target_epsilon; 0 = clipping only
    target_epsilon: float  # 0 = no budget
    delta: float
    max_grad_norm: float
    optimizer: str  # "adam", "adambc" or "sgd"
    batch_size: int  # expected logical batch, when sample_rate is 0
    sample_rate: float = 0.0
    adambc_floor: float = 1e-8  # "adambc": γ', the floor of the corrected second moment

    def rate(self, rows: int) -> float:
        """The sampling rate the run asks for."""
        return self.sample_rate or min(1.0, self.batch_size / max(rows, 1))

    def logical_batch(self, rows: int) -> int:
        return max(1, round(self.rate(rows) * rows))

    def effective_rate(self, rows: int) -> float:
        """The sampling rate DP-SGD really runs with and Opacus accounts: Opacus's own
        arithmetic (``DPDataLoader.from_data_loader``, ``make_private``) on the logical batch."""
        loader_rate = 1 / math.ceil(rows / self.logical_batch(rows))
        return 1 / int(1 / loader_rate)


@dataclass(frozen=True)
class RegionPolicy:
    """A region's own limits (node settings ``FLAME_POLICY_*``)."""

    require_dp: bool = False
    max_epsilon: float = 0.0  # per run; 0 = any
    max_delta: float = 0.0  # 0 = at most 1/rows where the region guards its privacy
    lifetime_epsilon: float = 0.0  # 0 = no cap
    max_evaluations: int = 0  # per run; 0 = any
    histogram_bins: int = 1600
    eval_noise: float = 0.0  # 0 = exact evaluation answers

    @property
    def guards_dp(self) -> bool:
        """Whether this region trains only with DP-SGD."""
        return self.require_dp or bool(self.max_epsilon or self.lifetime_epsilon)


def accounted(releases: Iterable[Release]) -> History:
    """What ε covers: every training release (σ = 0, no noise, makes it infinite) and every
    privatized evaluation answer. Exact evaluation answers are counted, not covered."""
    return [(r.noise, r.rate, r.steps) for r in releases if r.kind == TRAIN or r.noise > 0]


def lifetime_delta(policy: RegionPolicy, deltas: Iterable[float]) -> float:
    """The δ the lifetime ε is stated at: FLAME_POLICY_MAX_DELTA, else the smallest δ any run
    asked for (the larger ε of the two)."""
    return policy.max_delta or min(deltas, default=1e-5)


def epsilon_of(history: History, delta: float) -> float:
    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # clipping without noise: no privacy
    steps: dict[tuple[float, float], int] = {}
    for sigma, rate, n in history:  # RDP adds up over steps: one entry per (σ, q)
        steps[sigma, rate] = steps.get((sigma, rate), 0) + n
    accountant = RDPAccountant()
    accountant.history = [(sigma, rate, n) for (sigma, rate), n in steps.items()]
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


def check_run(dp: bool, config: DPConfig, rows: int, plan: Plan, policy: RegionPolicy) -> None:
    """Refuse (one line, naming the setting) a train task looser than the region's policy or
    whose accounting would not hold, before any step is taken."""
    if policy.guards_dp and not dp:
        raise PolicyError(
            "region policy: this region trains only with DP-SGD (FLAME_DP=true; "
            "FLAME_POLICY_REQUIRE_DP)"
        )
    if not dp:
        return
    if config.rate(rows) < 1 / rows:
        raise PolicyError(
            f"the run asks for DP sampling rate {config.rate(rows):.3g}, below 1/rows = "
            f"{1 / rows:.3g} of this region's {rows:,} training rows (FLAME_DP_SAMPLE_RATE)"
        )
    rate = config.effective_rate(rows)
    sigma = noise_multiplier(config, rate, plan.total)
    if sigma == 0 and policy.require_dp:
        raise PolicyError(
            "region policy: noise multiplier 0 gives no privacy (FLAME_DP_NOISE_MULTIPLIER=0); "
            "this region requires DP-SGD with noise (FLAME_POLICY_REQUIRE_DP)"
        )
    limit = policy.max_delta or (1 / rows if policy.guards_dp else 0.0)
    if limit and config.delta > limit:
        raise PolicyError(
            f"region policy: the run asks for δ={config.delta:g}, this region accepts at most "
            f"δ={limit:.3g} (FLAME_POLICY_MAX_DELTA; unset: 1/rows of its {rows:,} rows)"
        )
    planned = epsilon_of([(sigma, rate, plan.total)], config.delta)
    if policy.max_epsilon and planned > policy.max_epsilon * 1.01:  # Opacus's search tolerance
        raise PolicyError(
            f"region policy: the run plans ε={planned:.3g}, this region accepts at most "
            f"ε={policy.max_epsilon:g} per run (FLAME_POLICY_MAX_EPSILON)"
        )


def charge(charging: Charge, release: Release, policy: RegionPolicy) -> tuple[float, int]:
    """Check one release against the region's caps (what is spent plus this release), then
    add it to the ledger; returns the run's ε once it is made, and the release's number."""
    spent = charging.spent
    if policy.max_delta and release.delta > policy.max_delta:
        raise PolicyError(
            f"region policy: the run asks for δ={release.delta:g}, this region accepts at most "
            f"δ={policy.max_delta:g} (FLAME_POLICY_MAX_DELTA)"
        )
    run = [r for r in spent if r.run_id == release.run_id]
    answers = sum(r.kind == EVALUATE for r in run)
    if release.kind == EVALUATE and policy.max_evaluations and answers >= policy.max_evaluations:
        raise PolicyError(
            f"region policy: this run already had {answers} evaluation answers, the most this "
            f"region gives one run (FLAME_POLICY_MAX_EVALUATIONS={policy.max_evaluations})"
        )
    run_epsilon = epsilon_of(accounted([*run, release]), policy.max_delta or release.delta)
    if policy.max_epsilon and run_epsilon > policy.max_epsilon * 1.01:
        raise PolicyError(
            f"region policy: {WHAT[release.kind]} would take the run to "
            f"ε={run_epsilon:.3g}, this region allows at most ε={policy.max_epsilon:g} per run "
            "(FLAME_POLICY_MAX_EPSILON)"
        )
    if policy.lifetime_epsilon:
        delta = lifetime_delta(policy, [r.delta for r in [*spent, release]])
        before = epsilon_of(accounted(spent), delta)
        after = epsilon_of(accounted([*spent, release]), delta)
        if after > policy.lifetime_epsilon:
            raise PolicyError(
                f"region policy: {WHAT[release.kind]} would take the region's lifetime "
                f"spend from ε={before:.3g} to ε={after:.3g} (δ={delta:g}), above "
                f"FLAME_POLICY_LIFETIME_EPSILON={policy.lifetime_epsilon:g}"
            )
    return run_epsilon, charging.add(replace(release, epsilon=run_epsilon))


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
    rate = config.effective_rate(rows)
    return epsilon_of(
        [(noise_multiplier(config, rate, plan.total), rate, plan.total)], config.delta
    )


MT_WORDS, MT_OFFSET = 624, 24  # torch's CPU generator state: the Mersenne Twister's words


def sampling_generator(stream: SecretStream) -> torch.Generator:
    """A torch generator for Opacus's Poisson sampling whose whole Mersenne Twister state (624
    words) comes from ``stream``: ``manual_seed`` would keep only 32 bits of any seed."""
    state = bytearray(torch.Generator().manual_seed(0).get_state().numpy().tobytes())
    words = stream.words(MT_WORDS)
    for i in range(MT_WORDS):  # each word is stored as a uint64
        state[MT_OFFSET + 8 * i : MT_OFFSET + 8 * i + 8] = words[4 * i : 4 * i + 4] + bytes(4)
    generator = torch.Generator()
    generator.set_state(torch.tensor(list(state), dtype=torch.uint8))
    return generator


def secret_noise(stream: SecretStream) -> Callable[..., torch.Tensor]:
    """Opacus's ``_generate_noise`` drawing from ``stream`` (AES-CTR) instead of torch."""

    def generate(std: float, reference: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        if std == 0:
            return torch.zeros_like(reference)
        draws = torch.from_numpy(stream.normal(reference.numel()) * std)
        return draws.to(reference.dtype).view_as(reference)

    return generate


class AdamBC(torch.optim.Optimizer):
    """DP-AdamBC (Tang, Shpilevskiy and Lécuyer, "Your DP-Adam Is Actually DP-SGD (Unless You
    Apply Bias Correction)", AAAI 2024): Adam whose bias-corrected second moment has the DP
    noise's variance Φ = ``noise_std()``² taken out, per coordinate, floored at ``floor`` (γ'):
    θ -= lr · m̂ / (sqrt(max(v̂ - Φ, γ')) + eps). Under noise that dominates the gradient, plain
    Adam's v̂ is Φ for every weight and it moves like SGD with momentum; this keeps Adam's
    per-weight scaling. With Φ = 0 and γ' = 0 it is ``torch.optim.Adam``."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        floor: float = 1e-8,
        noise_std: Callable[[], float] = lambda: 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "floor": floor})
        self.noise_std = noise_std  # per coordinate, in the gradient this optimizer is given

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        variance = self.noise_std() ** 2
        for group in self.param_groups:
            (beta1, beta2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                second = self.second_moment(p, variance)
                p.addcdiv_(m, second.sqrt_().add_(group["eps"]), value=-lr / (1 - beta1**t))

    def second_moment(self, p: torch.Tensor, variance: float) -> torch.Tensor:
        """max(v̂ - Φ, γ'): ``p``'s bias-corrected second moment less the noise variance Φ."""
        state, floor = self.state[p], self.param_groups[0]["floor"]
        v_hat = state["exp_avg_sq"] / (1 - self.param_groups[0]["betas"][1] ** state["step"])
        return (v_hat - variance).clamp_(min=floor)


def gradient_noise_std(optimizer: DPOptimizer) -> float:
    """The per-coordinate std of the Gaussian noise in the gradient Opacus hands the optimizer it
    wraps (Opacus 1.6 ``DPOptimizer.add_noise``, ``scale_grad``): σ·C added to the sum of the
    clipped per-sample gradients, divided, for a mean loss, by the expected batch size times
    the physical batches accumulated into the step."""
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    if std and optimizer.loss_reduction == "mean":
        std /= optimizer.expected_batch_size * optimizer.accumulated_iterations
    return float(std)


def _optimizer(model: nn.Module, config: DPConfig, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if config.optimizer == "adambc":
        return AdamBC(model.parameters(), lr=lr, floor=config.adambc_floor)
    return torch.optim.Adam(model.parameters(), lr=lr)


def dp_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    config: DPConfig,
    plan: Plan,
    rnd: int,
    history: History,
    pos_weight: float,
    charge: Callable[[float, float, int], tuple[float, bytes]],
    basis: Callable[[], torch.Tensor | None] = lambda: None,
) -> tuple[float, float, bool]:
    """One round of DP training (``plan.steps`` logical steps) after the run's earlier training
    releases ``history``; where ``basis()`` gives a public U (d × k, ``flame.fl.subspace``) only
    the k coordinates z of θ0 + U z train, and are clipped and noised. ``charge(σ, q, steps)``
    records the round in the region's ledger before any step (refusing it if the region's caps
    say so) and returns the run's ε with it and the secret key this release alone draws its
    Poisson samples and noise from. Returns (mean loss, the run's ε, budget exhausted?)."""
    sample_rate = config.effective_rate(len(x))
    sigma = noise_multiplier(config, sample_rate, plan.total)
    release = (sigma, sample_rate, plan.steps)
    if (spent := over_budget(config, history, release)) is not None:
        return math.nan, spent, True
    epsilon, key = charge(*release)
    directions = basis()  # after the budget check: a region that stops does not build it
    trained = model if directions is None else Subspace(model, directions)
    engine, private, optimizer, loader = make_private(
        trained, TensorDataset(x, y), config, release, plan.lr_at(rnd, 0), key
    )
    loss = private_steps(private, optimizer, loader, plan, rnd, pos_weight, key)
    private._close()  # remove Opacus's hooks: the model object stays a plain nn.Module
    if isinstance(trained, Subspace):
        trained.write_back()
    if engine.accountant.history != [release]:  # what was charged
        raise RuntimeError(f"DP accounting: Opacus recorded {engine.accountant.history}")
    log.info(
        "DP round: σ=%.3f, q=%.4f, %d steps%s, the run's ε so far %.3f",
        sigma, sample_rate, plan.steps,
        "" if directions is None else f" in a {directions.shape[1]}-dim public subspace", epsilon,
    )  # fmt: skip
    return loss, epsilon, False


def over_budget(config: DPConfig, history: History, release: Noisy) -> float | None:
    """The ε spent so far if ``release`` would take the run past its budget (with a warning),
    else None."""
    planned = epsilon_of([*history, release], config.delta)
    budget = config.target_epsilon
    if budget <= 0 or planned <= budget * 1.01:  # 1 % = Opacus's noise search tolerance
        return None
    spent = epsilon_of(history, config.delta)
    log.warning(
        "privacy budget spent: ε=%.3f of %.3f; another round would reach %.3f, "
        "so this region stops training",
        spent, budget, planned,
    )  # fmt: skip
    return spent


def make_private(
    model: nn.Module, rows: TensorDataset, config: DPConfig, release: Noisy, lr: float,
    key: bytes,
) -> tuple[PrivacyEngine, nn.Module, DPOptimizer, DataLoader]:  # fmt: skip
    """Opacus's engine, model, optimiser and loader for one release: Poisson samples from the
    release's secret key, at exactly the sampling rate that was charged."""
    sigma, sample_rate, _ = release
    loader = DPDataLoader.from_data_loader(
        DataLoader(rows, batch_size=config.logical_batch(len(rows))),
        generator=sampling_generator(SecretStream(key, b"poisson sampling")),
    )
    if 1 / len(loader) != sample_rate:
        raise RuntimeError(f"DP accounting: Opacus samples at {1 / len(loader)}, not {sample_rate}")
    engine = PrivacyEngine(accountant="rdp")
    private, optimizer, loader = engine.make_private(
        module=model,
        optimizer=_optimizer(model, config, lr),
        data_loader=loader,  # already Poisson-sampled, from the region's generator
        noise_multiplier=sigma,
        max_grad_norm=config.max_grad_norm,
        poisson_sampling=False,
    )
    if isinstance(optimizer.original_optimizer, AdamBC):  # the noise Opacus really adds
        optimizer.original_optimizer.noise_std = lambda: gradient_noise_std(optimizer)
    return engine, private, optimizer, loader


def private_steps(
    private: nn.Module, optimizer: DPOptimizer, loader: DataLoader, plan: Plan, rnd: int,
    pos_weight: float, key: bytes,
) -> float:  # fmt: skip
    """Round ``rnd``'s ``plan.steps`` logical DP-SGD steps, the noise drawn from the release's
    secret key; the mean loss."""
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    private.train()
    total, step = torch.zeros(()), 0
    with (
        mock.patch("opacus.optimizers.optimizer._generate_noise", secret_noise(SecretStream(key))),
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
                finite_grad_samples(optimizer)
                optimizer.step()
                if not optimizer._is_last_step_skipped:  # a whole logical batch is done
                    step += 1
                    bar.update()
                    if step == plan.steps:
                        break
    return total.item() / max(plan.steps, 1)


def finite_grad_samples(optimizer: DPOptimizer) -> None:
    """Zero the non-finite entries of the per-sample gradients before Opacus clips them: its
    clip factor C/‖g‖ is 0 for an infinite norm and 0·inf is NaN, so one row whose gradient a
    crafted model overflows would make the whole release NaN. What is left is clipped to C."""
    for p in optimizer.params:
        samples = p.grad_sample
        if isinstance(samples, list):
            p.grad_sample = [torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in samples]
        elif samples is not None:
            p.grad_sample = torch.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)


def ledger_report(state_dir: Path, policy: RegionPolicy) -> list[str]:
    """What each region's ledger under ``state_dir`` says: per run, what it released and the
    ε it spent; the region's lifetime ε and what is left of FLAME_POLICY_LIFETIME_EPSILON."""
    lines = []
    for region, folder in ledgers(state_dir).items():
        with Ledger(folder) as ledger:
            rows = ledger.releases()
        delta = lifetime_delta(policy, [r.delta for r in rows])
        total = epsilon_of(accounted(rows), delta)
        cap = policy.lifetime_epsilon
        left = f", {max(cap - total, 0):.3f} left of FLAME_POLICY_LIFETIME_EPSILON={cap:g}"
        runs = list(dict.fromkeys(r.run_id for r in rows))
        lines += [
            f"region {region} ({folder / 'ledger.db'}): {len(runs)} runs, lifetime "
            f"ε={total:.3f} at δ={delta:g}{left if cap else ''}",
            f"  {'run':<20} {'app':<12} {'rounds':>6} {'train':>5} {'eval':>4} {'exact':>5} "
            f"{'ε':>8} {'δ':>8}  {'first':<25} last",
        ]
        for run in runs:
            mine = [r for r in rows if r.run_id == run]
            train = sum(r.kind == TRAIN for r in mine)
            exact = sum(r.kind == EVALUATE and r.noise == 0 for r in mine)
            lines.append(
                f"  {run:<20} {(mine[0].app or 'simulation')[:12]:<12} "
                f"{len({r.round for r in mine}):>6} {train:>5} {len(mine) - train:>4} "
                f"{exact:>5} {mine[-1].epsilon:>8.3f} {mine[-1].delta:>8.2g}  "
                f"{mine[0].at:<25} {mine[-1].at}"
            )
    return lines
