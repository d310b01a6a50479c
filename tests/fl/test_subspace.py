"""DP-SGD in a public gradient subspace (flame.fl.subspace): what it releases stays in the
subspace, one row moves it by at most the clipping norm, and its noise is the region's secret."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flame.data.features import build_features, labels
from flame.data.synth import generate
from flame.fl.privacy import DPConfig, dp_train
from flame.fl.subspace import SubspaceError, flat_weights, public_basis, public_rows
from flame.model.net import FraudMLP
from flame.model.train import Plan
from flame.settings import SettingsError, load_settings

K = 6


@pytest.fixture(scope="module")
def public() -> tuple[torch.Tensor, torch.Tensor]:
    return public_rows(seed=3, drop_balances=True)


@pytest.fixture(scope="module")
def region() -> tuple[torch.Tensor, torch.Tensor]:
    frame = generate(3_000, seed=11, fraud_rate=0.03)
    x = build_features(frame, drop_balances=True)
    return torch.from_numpy(x), torch.from_numpy(labels(frame))


def new_model(width: int, seed: int = 0) -> FraudMLP:
    torch.manual_seed(seed)
    return FraudMLP(width, [16, 8])


def config(**changes: object) -> DPConfig:
    values = {"noise_multiplier": 1.0, "target_epsilon": 0.0, "delta": 1e-5,
              "max_grad_norm": 0.1, "optimizer": "adam", "batch_size": 512} | changes  # fmt: skip
    return DPConfig(**values)  # type: ignore[arg-type]


def trained(
    model: FraudMLP, x: torch.Tensor, y: torch.Tensor, basis: torch.Tensor | None,
    key: bytes, dp: DPConfig, steps: int = 10, lr: float = 0.02,
) -> torch.Tensor:  # fmt: skip
    dp_train(
        model, x, y, config=dp, plan=Plan(steps=steps, rounds=1, lr=lr, schedule="constant"),
        rnd=1, history=[], pos_weight=2.0, charge=lambda *release: (0.0, key),
        basis=lambda: basis,
    )  # fmt: skip
    return flat_weights(model)


def test_the_basis_comes_from_public_rows_and_the_model_only(public) -> None:  # type: ignore[no-untyped-def]
    x, y = public
    assert len(x) == 2_000 and int(y.sum()) == 300
    again = public_rows(seed=3, drop_balances=True)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])  # no region's rows, no state
    basis = public_basis(new_model(x.shape[1]), x, y, K, 2.0)
    d = flat_weights(new_model(x.shape[1])).numel()
    assert basis.shape == (d, K)
    assert torch.allclose(basis.T @ basis, torch.eye(K), atol=1e-5)
    assert torch.equal(basis, public_basis(new_model(x.shape[1]), x, y, K, 2.0))
    other = public_basis(new_model(x.shape[1], seed=1), x, y, K, 2.0)  # the global model moved
    assert not torch.allclose(basis.abs(), other.abs(), atol=1e-3)


def test_the_update_stays_in_the_subspace(public, region) -> None:  # type: ignore[no-untyped-def]
    model = new_model(region[0].shape[1])
    start = flat_weights(model)
    basis = public_basis(model, *public, K, 2.0)
    moved = trained(model, *region, basis, os.urandom(32), config()) - start
    assert moved.norm() > 1e-3  # it trained
    outside = moved - basis @ (basis.T @ moved)
    assert outside.norm() < 1e-5 * moved.norm() + 1e-6
    assert isinstance(model, FraudMLP) and not hasattr(model, "_module")  # a plain model again


def test_one_row_moves_the_release_by_at_most_the_clipping_norm(public, region) -> None:  # type: ignore[no-untyped-def]
    """Neighbouring data sets: the region's rows with and without one extreme legitimate row
    (every feature 10⁶). One step of SGD at sampling rate 1 with no noise: the two releases
    differ by at most 2·lr·C/(n+1), although that row's own gradient in the subspace is far
    longer than C."""
    x, y = region
    outlier = torch.full((1, x.shape[1]), 1e6)
    neighbour = torch.cat([x, outlier]), torch.cat([y, torch.zeros(1)])
    model = new_model(x.shape[1])
    basis = public_basis(model, *public, K, 2.0)
    lr, clip = 0.5, 0.1
    dp = config(noise_multiplier=0.0, batch_size=10**9, optimizer="sgd", max_grad_norm=clip)
    key = os.urandom(32)
    without = trained(new_model(x.shape[1]), x, y, basis, key, dp, steps=1, lr=lr)
    with_row = trained(new_model(x.shape[1]), *neighbour, basis, key, dp, steps=1, lr=lr)
    own = torch.func.grad(  # that row's unclipped gradient, in the subspace
        lambda z: torch.nn.functional.binary_cross_entropy_with_logits(
            torch.func.functional_call(model, _weights(model, basis, z), (outlier,)),
            torch.zeros(1),
            pos_weight=torch.tensor(2.0),
        )
    )(torch.zeros(K))
    assert own.norm() > 1e4 * clip  # clipping had work to do
    assert (with_row - without).norm() <= 2 * lr * clip / (len(x) + 1) * 1.001


def _weights(model: FraudMLP, basis: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    from flame.fl.subspace import unflatten

    return unflatten(model, flat_weights(model) + basis @ z)


def test_the_noise_is_drawn_from_the_regions_key_alone(public, region) -> None:  # type: ignore[no-untyped-def]
    """The coordinator knows the basis (public) and every run setting; without the region's
    key it cannot draw the same noise: torch's own generator plays no part."""
    width = region[0].shape[1]
    basis = public_basis(new_model(width), *public, K, 2.0)
    key = os.urandom(32)
    torch.manual_seed(1)
    first = trained(new_model(width), *region, basis, key, config())
    torch.manual_seed(2)
    replayed = trained(new_model(width), *region, basis, key, config())
    guessed = trained(new_model(width), *region, basis, bytes(32), config())
    assert torch.equal(first, replayed)  # whoever holds the key replays it exactly
    assert not torch.allclose(first, guessed)


def test_more_directions_than_the_public_gradients_span_is_refused(public) -> None:  # type: ignore[no-untyped-def]
    x, y = public
    with pytest.raises(
        SubspaceError, match=r"^FLAME_DP_SUBSPACE=5000: the subspace needs 1 to \d+ directions"
    ) as err:
        public_basis(new_model(x.shape[1]), x, y, 5_000, 2.0)
    assert "\n" not in str(err.value)


def test_the_subspace_needs_dp() -> None:
    with pytest.raises(SettingsError, match="FLAME_DP_SUBSPACE needs FLAME_DP=true"):
        load_settings(dp_subspace=8)
    assert load_settings(dp=True, dp_target_epsilon=1.0, dp_subspace=8).dp_subspace == 8


@pytest.mark.parametrize(
    ("changes", "subspace", "clip"),
    [
        ({}, 8, 0.1),  # DP from the warm start, without the balance columns: the subspace
        ({"pretrain_rows": 0}, 0, 1.0),  # from random weights: every weight
        ({"drop_balance_features": False}, 0, 1.0),  # with the balance columns: every weight
        ({"dp_subspace": 0}, 0, 1.0),
        ({"dp_max_grad_norm": 0.5}, 8, 0.5),
        ({"dp": False, "dp_target_epsilon": 0.0}, 0, 1.0),
    ],
)
def test_the_default_dp_recipe(changes: dict, subspace: int, clip: float) -> None:  # type: ignore[type-arg]
    settings = load_settings(**({"dp": True, "dp_target_epsilon": 1.0} | changes))
    assert (settings.dp_subspace, settings.dp_max_grad_norm) == (subspace, clip)
    # what a region reads back from the run config the server submits is the same
    from flame.settings import run_config

    again = load_settings(run_config(settings))
    assert (again.dp_subspace, again.dp_max_grad_norm) == (subspace, clip)


@pytest.mark.integration
def test_a_dp_run_in_the_subspace_spends_the_same_budget(tmp_path: Path) -> None:
    """A real simulation with FLAME_DP_SUBSPACE: each region says it trains in the subspace and
    reaches the same whole-run ε as DP-SGD on every weight plans for the same steps."""
    from tests.test_integration import run_main

    out = tmp_path / "dp"
    proc = run_main(
        ["--rounds", "2", "--rows", "20000", "--fraud-rate", "0.01", "--local-epochs", "1",
         "--out", str(out), "--verbose"],
        {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "2", "FLAME_DP_SUBSPACE": "8",
         "FLAME_DP_MAX_GRAD_NORM": "0.1"},
    )  # fmt: skip
    assert "in a 8-dim public subspace" in proc.stdout + proc.stderr
    table = pd.read_csv(out / "metrics.csv")
    train = table[(table["stage"] == "train") & (table["kind"] == "client_aggregate")]
    eps = train.sort_values("round")["epsilon"].to_numpy()
    assert len(eps) == 2 and eps[0] < eps[1] and eps[1] == pytest.approx(2.0, rel=0.011)
    final = table[(table["stage"] == "evaluate") & (table["kind"] == "server")]
    assert np.isfinite(final["pr_auc"]).all()
