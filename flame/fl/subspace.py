"""DP-SGD in a subspace of public gradients (``FLAME_DP_SUBSPACE``): fewer noised coordinates.

DP-SGD's noise grows with the number of weights it lands on, while a region's few thousand rows
carry a fixed signal. Following gradient embedding perturbation (Yu, Zhang, Chen, Yin and Liu,
"Do Not Let Privacy Overbill Utility", ICLR 2021), each round a region trains only K coordinates
z of the weights θ = θ0 + U z, where θ0 is the round's global model and the K columns of U are
the top right singular vectors of the per-sample loss gradients of *public* rows (the synthetic
generator's, never a region's) at θ0. Opacus clips and noises the K-dimensional per-sample
gradients Uᵀg, so the accounting is unchanged: the same σ, sampling rate and steps. U depends
only on public rows and the model the server sent, so it costs no budget, whoever chose the
model: the sensitivity of every step is the clipping norm in z, whatever U is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from flame.data.features import build_features, labels
from flame.data.synth import generate
from flame.fl.protocol import Refusal

PUBLIC_ROWS, PUBLIC_FRAUD_RATE = 30_000, 0.02  # generated; 600 frauds
PUBLIC_FRAUDS, PUBLIC_LEGIT = 300, 1_700  # the rows whose gradients span the subspace


class SubspaceError(Refusal, ValueError):
    """The subspace asked for has more directions than the public gradients span."""


def public_seed(seed: int) -> int:
    """The synthetic data seed of the public rows: a stream of its own, never the run's data
    or the warm start's."""
    return int(np.random.SeedSequence([seed, 0x5B5]).generate_state(1)[0])


def public_rows(seed: int, drop_balances: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``PUBLIC_FRAUDS`` fraud and ``PUBLIC_LEGIT`` legitimate synthetic rows, as features."""
    frame = generate(PUBLIC_ROWS, seed=public_seed(seed), fraud_rate=PUBLIC_FRAUD_RATE)
    y = labels(frame)
    pick = np.concatenate(
        [np.flatnonzero(y == 1)[:PUBLIC_FRAUDS], np.flatnonzero(y == 0)[:PUBLIC_LEGIT]]
    )
    x = build_features(frame, drop_balances=drop_balances)
    return torch.from_numpy(x[pick]), torch.from_numpy(y[pick])


def flat_weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def unflatten(model: nn.Module, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``theta`` (all of ``model``'s weights in one vector) as its named weights."""
    weights, start = {}, 0
    for name, p in model.named_parameters():
        weights[name] = theta[start : start + p.numel()].view_as(p)
        start += p.numel()
    return weights


def public_basis(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, pos_weight: float
) -> torch.Tensor:
    """The top ``k`` right singular vectors of the per-sample gradients of the weighted BCE loss
    on rows ``x, y`` at ``model``'s weights (dropout off): a d × k orthonormal basis."""
    theta, weight = flat_weights(model), torch.tensor(pos_weight)
    was_training = model.training
    model.eval()

    def loss(t: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logit = functional_call(model, unflatten(model, t), (xi[None],))
        return nn.functional.binary_cross_entropy_with_logits(logit, yi[None], pos_weight=weight)

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(theta, x, y)
    model.train(was_training)
    if not 0 < k <= min(grads.shape):
        raise SubspaceError(
            f"FLAME_DP_SUBSPACE={k}: the subspace needs 1 to {min(grads.shape)} directions "
            f"(this model has {grads.shape[1]:,} weights, from {grads.shape[0]:,} public rows)"
        )
    return torch.linalg.svd(grads, full_matrices=False)[2][:k].T.contiguous()


class Subspace(nn.Module):
    """``model`` with its weights restricted to θ0 + U z; only z (k values) trains.

    ``model`` is kept outside the module tree (and θ0, U as plain tensors, not buffers), so
    Opacus sees one layer with one parameter and computes its per-sample gradients Uᵀg with
    functorch. The wrapped model runs without dropout."""

    def __init__(self, model: nn.Module, basis: torch.Tensor) -> None:
        super().__init__()
        self._model = (model,)  # a tuple: not a submodule
        self.theta0, self.basis = flat_weights(model), basis.detach()
        self.z = nn.Parameter(torch.zeros(basis.shape[1]))

    def weights(self) -> torch.Tensor:
        return self.theta0 + self.basis @ self.z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (model,) = self._model
        model.eval()
        return functional_call(model, unflatten(model, self.weights()), (x,))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy θ0 + U z into the wrapped model's own weights."""
        (model,) = self._model
        for name, value in unflatten(model, self.weights()).items():
            model.get_parameter(name).copy_(value)
