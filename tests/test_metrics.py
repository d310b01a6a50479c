from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from flame.model import metrics as fm


def region_record(logits: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, object]:
    exact = fm.exact_metrics(logits, y, threshold)
    pos, neg = fm.histograms(logits, y)
    return {**exact, "num_examples": len(y), "hist_pos": pos, "hist_neg": neg}


@pytest.fixture
def regions() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for n, rate, shift in ((5_000, 0.01, 3.0), (2_000, 0.08, 0.8)):
        y = (rng.random(n) < rate).astype(float)
        out.append((rng.normal(-4, 1.5, n) + shift * 2 * y, y))
    return out


def test_pooled_counts_equal_the_union(regions: list[tuple[np.ndarray, np.ndarray]]) -> None:
    pooled = fm.pool(region_record(x, y, 0.3) for x, y in regions)
    x_all = np.concatenate([x for x, _ in regions])
    y_all = np.concatenate([y for _, y in regions])
    union = fm.exact_metrics(x_all, y_all, 0.3)
    for key in ("tp", "fp", "fn", "tn", "precision", "recall", "f1", "accuracy"):
        assert pooled[key] == pytest.approx(union[key]), key
    assert pooled["f1"] == pytest.approx(f1_score(y_all, fm.sigmoid(x_all) >= 0.3))
    per_region_f1 = [fm.exact_metrics(x, y, 0.3)["f1"] for x, y in regions]
    assert pooled["f1"] != pytest.approx(float(np.mean(per_region_f1)), abs=1e-3)
    assert pooled["roc_auc"] == pytest.approx(roc_auc_score(y_all, x_all), abs=2e-3)
    assert pooled["pr_auc"] == pytest.approx(average_precision_score(y_all, x_all), abs=1e-2)
    assert pooled["loss"] == pytest.approx(union["loss"])


def test_histogram_metrics_match_sklearn_on_one_set() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(20_000) < 0.02).astype(float)
    x = rng.normal(-3, 2, len(y)) + 4 * y
    got = fm.from_histograms(*fm.histograms(x, y))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, x), abs=1e-3)
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, x), abs=5e-3)


def test_best_threshold_maximises_f1() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(10_000) < 0.05).astype(float)
    x = rng.normal(-3, 1.5, len(y)) + 5 * y
    threshold = fm.best_threshold(*fm.histograms(x, y))
    best = fm.exact_metrics(x, y, threshold)["f1"]
    for other in (0.05, 0.2, 0.5, 0.8, 0.95):
        assert best >= fm.exact_metrics(x, y, other)["f1"] - 1e-9


def test_single_class_gives_nan_auc_not_a_crash() -> None:
    result = fm.exact_metrics(np.array([-1.0, -2.0]), np.array([0.0, 0.0]), 0.5)
    assert np.isnan(result["roc_auc"]) and result["precision"] == 0.0


def test_best_threshold_takes_the_middle_of_a_plateau() -> None:
    y = np.array([0.0] * 100 + [1.0] * 10)
    x = np.concatenate([np.full(100, -10.0), np.full(10, 10.0)])  # separable: F1 = 1 on a range
    threshold = fm.best_threshold(*fm.histograms(x, y))
    assert fm.exact_metrics(x, y, threshold)["f1"] == 1.0
    assert 0.01 < threshold < 0.99  # near the middle of the gap (logit 0), not at an extreme


def test_too_few_or_one_class_rows_are_refused_with_what_and_why() -> None:
    import numpy as np
    import pytest

    rows = np.zeros(fm.MIN_ROWS)
    fm.require_usable_rows(np.r_[rows, 1], "rows", "x")
    with pytest.raises(fm.DegenerateDataError, match=r"^region us: its 50 rows hold no fraud"):
        fm.require_usable_rows(rows, "region us", "it sits out")
    with pytest.raises(fm.DegenerateDataError, match="only fraud"):
        fm.require_usable_rows(rows + 1, "the test set", "undefined")
    with pytest.raises(fm.DegenerateDataError, match=r"^region eu: 5 rows, fewer than the 50"):
        fm.require_usable_rows(np.array([0, 1, 0, 1, 0]), "region eu", "it sits out")


def test_coarse_histograms_pool_at_the_coarsest_and_keep_every_row() -> None:
    rng = np.random.default_rng(3)
    logits, y = rng.normal(-4, 3, 2000), (rng.random(2000) < 0.1).astype(float)
    fine = fm.region_metrics(logits, y, 0.5) | {"num_examples": 2000}
    coarse = fm.region_metrics(logits, y, 0.5, bins=25)
    assert len(coarse["hist_pos"]) == 25 and sum(coarse["hist_pos"]) == int(y.sum())
    pooled = fm.pool([fine, coarse])
    assert len(pooled["hist_pos"]) == 25 and sum(pooled["hist_neg"]) == 2 * int((1 - y).sum())
    assert pooled["pr_auc"] == pytest.approx(coarse["pr_auc"], abs=1e-3)  # the same rows twice
    with pytest.raises(ValueError, match="cannot coarsen a 1600-bin histogram to 30 bins"):
        fm.coarsen(fine["hist_pos"], 30)


def test_a_privatized_answer_is_derived_from_its_noisy_histograms_only() -> None:
    rng = np.random.default_rng(4)
    logits = np.concatenate([rng.normal(-8, 2.5, 3000), rng.normal(2, 3, 250)])
    y = np.r_[np.zeros(3000), np.ones(250)]
    exact = fm.region_metrics(logits, y, 0.5, bins=25)
    answers = [
        fm.region_metrics(logits, y, 0.5, 25, 8.0, np.random.default_rng(s).standard_normal)
        for s in range(20)
    ]
    for answer in answers:
        counts = sum(answer[k] for k in fm.COUNTS)
        assert counts == answer["num_examples"] == sum(answer["hist_pos"] + answer["hist_neg"])
        assert answer["hist_pos"] != exact["hist_pos"]  # noise on the very counts sent
    again = fm.region_metrics(logits, y, 0.5, 25, 8.0, np.random.default_rng(0).standard_normal)
    assert again == answers[0]  # the noise is the generator's: reproducible by its holder
    # empty bins stay empty (no phantom rows): the figures stay usable for model selection
    assert np.mean([a["pr_auc"] for a in answers]) == pytest.approx(exact["pr_auc"], abs=0.05)
