"""DP-AdamBC (``FLAME_DP_OPTIMIZER=adambc``): Adam with the DP noise's variance taken out of its
second moment, the variance being the one Opacus really adds."""

from __future__ import annotations

import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flame.fl.privacy import AdamBC, gradient_noise_std

ROWS, BATCH, SIGMA, CLIP = 2_000, 200, 4.0, 0.5


def private(optimizer: type[torch.optim.Optimizer], sigma: float, **kw: float):  # type: ignore[no-untyped-def]
    """A 2,000-weight linear model, its optimizer wrapped by Opacus as ``dp_train`` wraps it."""
    torch.manual_seed(0)
    model = nn.Linear(100, 20)
    x = torch.randn(ROWS, 100)
    loader = DataLoader(TensorDataset(x, torch.zeros(ROWS)), batch_size=BATCH)
    model, dp, loader = PrivacyEngine(accountant="rdp").make_private(
        module=model, optimizer=optimizer(model.parameters(), lr=1e-3, **kw),
        data_loader=loader, noise_multiplier=sigma, max_grad_norm=CLIP, poisson_sampling=False,
    )  # fmt: skip
    if isinstance(dp.original_optimizer, AdamBC):
        dp.original_optimizer.noise_std = lambda: gradient_noise_std(dp)
    return model, dp, loader


def steps(model, dp, loader, n: int, signal: bool) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """``n`` DP steps; with ``signal`` False every per-sample gradient is 0 (pure noise)."""
    seen, done = [], 0
    while done < n:
        for xb, _ in loader:
            dp.zero_grad()
            out = model(xb)
            ((out**2).mean() if signal else (out * 0).sum()).backward()
            dp.step()
            seen += [p.grad.detach().clone().flatten() for p in model.parameters()]
            done += 1
            if done == n:
                break
    return seen


def test_the_variance_taken_out_is_the_noise_opacus_adds() -> None:
    model, dp, loader = private(AdamBC, SIGMA, floor=1e-12)
    grads = torch.cat(steps(model, dp, loader, 300, signal=False))
    phi = gradient_noise_std(dp) ** 2
    assert phi == pytest.approx((SIGMA * CLIP / (ROWS * (BATCH / ROWS))) ** 2)  # σC/B
    assert grads.var().item() == pytest.approx(phi, rel=0.02)  # what the optimizer was given
    corrected = torch.cat([dp.original_optimizer.second_moment(p, phi).flatten()
                           for p in model.parameters()])  # fmt: skip
    v_hat = torch.cat([dp.original_optimizer.second_moment(p, 0.0).flatten()
                       for p in model.parameters()])  # fmt: skip
    assert v_hat.mean().item() == pytest.approx(phi, rel=0.03)  # plain Adam's: the noise alone
    assert corrected.mean().item() < 0.05 * phi  # corrected: next to nothing left
    assert (corrected == 1e-12).float().mean() > 0.4  # about half the weights at the floor


def test_without_noise_it_is_adam() -> None:
    adam, adam_dp, adam_loader = private(torch.optim.Adam, 0.0)
    bc, bc_dp, bc_loader = private(AdamBC, 0.0, floor=0.0)
    assert gradient_noise_std(bc_dp) == 0
    steps(adam, adam_dp, adam_loader, 20, signal=True)
    steps(bc, bc_dp, bc_loader, 20, signal=True)
    for a, b in zip(adam.parameters(), bc.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    moved = next(iter(adam.parameters()))
    assert not torch.allclose(moved, private(torch.optim.Adam, 0.0)[0]._module.weight)


def test_under_noise_it_keeps_adams_per_weight_scale() -> None:
    """Signals 10x apart under noise 10x the larger: Adam's steps are 10x apart (SGD-like),
    AdamBC's within 2x, as Adam's are without noise."""
    torch.manual_seed(1)
    noise, signal = 1.0, torch.cat([torch.full((500,), 0.3), torch.full((500,), 0.03)])
    moves = {}
    for name, make in {
        "adam": lambda w: torch.optim.Adam([w], lr=1e-3),
        "adambc": lambda w: AdamBC([w], lr=1e-3, floor=1e-6, noise_std=lambda: noise),
    }.items():
        w = nn.Parameter(torch.zeros(1000))
        opt = make(w)
        gen = torch.Generator().manual_seed(2)
        for _ in range(3000):
            w.grad = signal + noise * torch.randn(1000, generator=gen)
            opt.step()
        moves[name] = (-w[:500].mean() / -w[500:].mean()).item()
    assert 7 < moves["adam"] < 13
    assert moves["adambc"] < 2.5
