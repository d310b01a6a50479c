"""DP-SGD in a subspace spanned by public (synthetic) per-sample gradients, against DP-SGD on
every weight: the model without the balance columns, two regions, 5 rounds of 100 steps, FedAvg.

    python benchmarks/dp_scratch/subspace.py TRAIN_DIR HELDOUT.csv SEED K EPS [LR] [CLIP] [adam|sgd]

K 0: every weight (the product's DP-SGD, without its dropout and schedule); K > 0: each round the
K top right singular vectors U of the per-sample gradients of 2,000 synthetic rows (300 frauds)
at the round's global model; a region trains z in θ = θ0 + U z, clipping and noising the K-dim
per-sample gradients Uᵀg. EPS 0: clipping only, no noise. σ is Opacus's for the region's
sampling rate (as the product computes it) over the run's 500 steps. Prints the held-out
file's average precision per round and a FINAL line. The accounting is Opacus's; the noise and
Poisson sampling are torch's seeded generator, not the product's secret stream: a measurement,
not a private run.
"""

import sys

import torch
from opacus.accountants.utils import get_noise_multiplier
from sklearn.metrics import average_precision_score
from torch import nn
from torch.func import functional_call, grad, vmap

from flame.data.cache import cached_region
from flame.data.features import build_features, labels
from flame.data.loader import read_paysim
from flame.data.partition import prepare
from flame.data.synth import generate
from flame.fl.client_app import dp_config
from flame.model.net import new_card
from flame.model.pretrain import initial_model
from flame.model.train import default_pos_weight
from flame.settings import load_settings

train_dir, heldout, seed, k, eps = (
    sys.argv[1],
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
    float(sys.argv[5]),
)
lr = float(sys.argv[6]) if len(sys.argv) > 6 else 0.02
clip = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
optimiser = sys.argv[8] if len(sys.argv) > 8 else "adam"
STEPS, ROUNDS = 100, 5

torch.manual_seed(seed)
torch.set_num_threads(1)
s = load_settings(data_path=train_dir, seed=seed, hidden_sizes=[32, 16])
prepare(s.data_spec())
regions = [cached_region(s.data_spec(), r, "")["train"] for r in s.regions]
frame = read_paysim(heldout)
xh, yh = torch.from_numpy(build_features(frame, drop_balances=True)), labels(frame)
model = initial_model(
    new_card(True, [32, 16], 0.5), seed, s.pretrain_rows, s.batch_size, s.learning_rate, s.cache_dir
)
model.eval()  # no dropout in the functional calls
names, shapes = zip(*[(n, p.shape) for n, p in model.named_parameters()], strict=True)


def unflat(v: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, shape in zip(names, shapes, strict=True):
        out[n], i = v[i : i + shape.numel()].view(shape), i + shape.numel()
    return out


def loss_one(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, pw: torch.Tensor
) -> torch.Tensor:
    logit = functional_call(model, unflat(theta), (x[None],))
    return nn.functional.binary_cross_entropy_with_logits(logit, y[None], pos_weight=pw)


per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0, None))
public = generate(30_000, seed=10_000 + seed, fraud_rate=0.02)
xp, yp = (
    torch.from_numpy(build_features(public, drop_balances=True)),
    torch.from_numpy(labels(public)),
)


def subspace(theta: torch.Tensor) -> torch.Tensor | None:
    if k <= 0:
        return None
    pick = torch.cat(
        [torch.nonzero(yp == 1).flatten()[:300], torch.nonzero(yp == 0).flatten()[:1700]]
    )
    g = per_sample(theta, xp[pick], yp[pick], torch.tensor(default_pos_weight(yp[pick].numpy())))
    return torch.linalg.svd(g, full_matrices=False)[2][:k].T  # d x k


def heldout_ap(theta: torch.Tensor) -> float:
    with torch.no_grad():
        return float(
            average_precision_score(yh, functional_call(model, unflat(theta), (xh,)).numpy())
        )


theta = torch.cat([p.detach().flatten() for p in model.parameters()])
print(f"d={theta.numel()} k={k} eps={eps} warm start AP={heldout_ap(theta):.3f}", flush=True)
for rnd in range(ROUNDS):
    u, trained, weights = subspace(theta), [], []
    for r, (x_np, y_np) in enumerate(regions):
        x, y, n = torch.from_numpy(x_np), torch.from_numpy(y_np), len(x_np)
        q = dp_config(s).effective_rate(n)  # the product's sampling rate
        sigma = (
            get_noise_multiplier(
                target_epsilon=eps,
                target_delta=s.dp_delta,
                sample_rate=q,
                steps=STEPS * ROUNDS,
                accountant="rdp",
            )
            if eps > 0
            else 0.0
        )
        pw = torch.tensor(default_pos_weight(y_np))
        z = torch.zeros(k if u is not None else theta.numel(), requires_grad=True)
        opt = (
            torch.optim.Adam([z], lr=lr)
            if optimiser == "adam"
            else torch.optim.SGD([z], lr=lr, momentum=0.9)
        )
        gen = torch.Generator().manual_seed(seed * 100 + r * 10 + rnd)
        for _ in range(STEPS):
            batch = torch.rand(n, generator=gen) < q
            g = per_sample(
                theta + (u @ z.detach() if u is not None else z.detach()), x[batch], y[batch], pw
            )
            g = g @ u if u is not None else g
            g = g * (clip / g.norm(dim=1, keepdim=True).clamp(min=clip))
            z.grad = (g.sum(0) + sigma * clip * torch.randn(g.shape[1], generator=gen)) / (q * n)
            opt.step()
        trained.append(theta + (u @ z.detach() if u is not None else z.detach()))
        weights.append(n)
    theta = sum(w * t for w, t in zip(weights, trained, strict=True)) / sum(weights)
    print(
        f"round {rnd + 1}: σ={sigma:.2f} q={q:.3f} held-out AP={heldout_ap(theta):.3f}", flush=True
    )
print("FINAL", seed, k, eps, round(heldout_ap(theta), 4))
