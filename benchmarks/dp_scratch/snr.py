# ruff: noqa: E501, B905  (scratch diagnostics of the dp-scratch branch)
"""Per-coordinate signal of the clipped mean gradient vs the DP noise std on it (σC/B), on one
region-sized sample of the random fold's training rows: at random init and at the DP model."""

import glob
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from flame.data.features import build_features, feature_names
from flame.data.loader import read_paysim_file
from flame.model.net import FraudMLP, load_model

torch.manual_seed(0)
fr = [
    read_paysim_file(Path(f"/work/shared/data/paysim-real/{f}.csv"))
    for f in ("head-step1-2688", "steps45-95-spreadsheet-7557")
]
x = torch.from_numpy(np.concatenate([build_features(f, False) for f in fr]))
y = torch.from_numpy(np.concatenate([f.isFraud.to_numpy() for f in fr]).astype(np.float32))
idx = torch.randperm(len(x))[:3400]
x, y = x[idx], y[idx]
pw = float(np.sqrt((len(y) - y.sum()) / y.sum()))
C, B, sigma = 1.0, 850, 22.81
noise = sigma * C / B
names = feature_names(False)


def report(model, tag):
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xb, yb):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            functional_call(model, p, (xb.unsqueeze(0),)),
            yb.unsqueeze(0),
            pos_weight=torch.tensor(pw),
        )

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([v.reshape(len(x), -1) for v in g.values()], 1)
    clipped = flat * (C / flat.norm(dim=1, keepdim=True)).clamp(max=1)
    mean = clipped.mean(0)
    snr = (mean.abs() / noise).numpy()
    w0 = g["net.0.weight"].reshape(len(x), -1)  # first layer: [hidden x features]
    first = clipped[:, : w0.shape[1]].mean(0).reshape(-1, len(names)).abs().mean(0) / noise
    top = sorted(zip(first.numpy(), names), reverse=True)[:6]
    print(
        f"{tag}: noise std per coordinate {noise:.4f}; |mean clipped grad|/noise: median {np.median(snr):.3f}, p90 {np.quantile(snr, 0.9):.3f}, share above 1: {(snr > 1).mean():.1%}"
    )
    print("   first-layer SNR by input feature (top 6):", [(n, round(float(s), 3)) for s, n in top])
    for n in ("type_CASH_IN", "type_PAYMENT", "hour_cos", "error_orig"):
        print(f"   {n}: {float(first[names.index(n)]):.3f}", end="")
    print()


report(FraudMLP(x.shape[1], [32, 16]), "random init")
d = glob.glob("/tmp/dpw/base/runs/federated_DP*real-5-random*")[0]
report(load_model(Path(d) / "model.pt")[0], "DP model after 5 rounds")
