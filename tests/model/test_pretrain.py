"""The warm start: trained on synthetic rows only, from its own seed stream, cached per recipe."""

from __future__ import annotations

import torch

from flame.data.features import build_features, labels
from flame.data.synth import generate
from flame.model import pretrain
from flame.model.metrics import exact_metrics
from flame.model.net import build_model, new_card
from flame.model.train import predict_logits

ROWS = 20_000


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_warm_start_learns_fraud_from_synthetic_rows_and_caches_it(tmp_path) -> None:
    card = new_card(False, [16, 8], 0.0)
    state = pretrain.warm_start(card, ROWS, 1, 256, 3e-3, tmp_path)
    (cached,) = (tmp_path / "pretrain").glob("*.pt")
    again = pretrain.warm_start(card, ROWS, 1, 256, 3e-3, tmp_path)  # from the cache
    assert all(torch.equal(state[k], again[k]) for k in state)
    frame = generate(ROWS, 99)  # rows the warm start never saw
    model = build_model(card)
    model.load_state_dict(state)
    scores = exact_metrics(predict_logits(model, torch.from_numpy(build_features(frame))),
                           labels(frame), 0.5)  # fmt: skip
    assert scores["pr_auc"] > 0.5  # untrained: about the fraud rate, 0.0013
    other = pretrain.cache_path(card, ROWS, 2, 256, 3e-3, tmp_path)
    assert other != cached and not other.exists()


def test_warm_start_never_uses_the_runs_own_synthetic_rows() -> None:
    assert pretrain.pretrain_seed(42) != 42
    own = set(generate(2_000, 42)["nameOrig"])
    warm = set(generate(2_000, pretrain.pretrain_seed(42))["nameOrig"])
    assert len(own & warm) < 20


def test_initial_model_records_the_warm_start_and_skips_it_on_resume(tmp_path) -> None:
    card = new_card(True, [8], 0.0)
    cold = pretrain.initial_model(card, 3, 0, 256, 3e-3, tmp_path)
    assert card.pretrained_rows == 0
    seeded = build_model(card, seed=3)
    assert same(cold, seeded)
    resumed = pretrain.initial_model(card, 3, ROWS, 256, 3e-3, tmp_path, warm=False)
    assert card.pretrained_rows == ROWS and not (tmp_path / "pretrain").exists()
    assert same(resumed, seeded)
    warm = pretrain.initial_model(card, 3, ROWS, 256, 3e-3, tmp_path)
    assert not same(warm, seeded)
