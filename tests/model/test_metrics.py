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


def test_budget_threshold_is_the_cut_whose_alert_rate_is_closest() -> None:
    """10 bins; from the top, 7 then 3 then 4 rows: a 1 % budget of 1,010 rows (10.1 alerts)
    flags the top two bins, whose lower edge is logit 24."""
    neg = [500, 300, 100, 50, 30, 10, 5, 3, 1, 1]
    pos = [0, 0, 0, 0, 0, 0, 1, 1, 2, 6]
    threshold = fm.budget_threshold(pos, neg, 0.01)
    assert threshold == pytest.approx(fm.sigmoid(24.0))
    figures = fm.alert_figures({"hist_pos": pos, "hist_neg": neg}, threshold, 0.01)
    assert figures["precision_at_budget"] == pytest.approx(8 / 10)
    assert figures["recall_at_budget"] == pytest.approx(8 / 10)
    assert figures["alert_rate_at_budget"] == pytest.approx(10 / 1010)
    # 8.5 alerts lie as close to 7 as to 10: the smaller alert load wins
    assert fm.budget_threshold(pos, neg, 8.5 / 1010) == pytest.approx(fm.sigmoid(32.0))
    assert fm.budget_threshold(pos, neg, 0.5) < fm.budget_threshold(pos, neg, 0.05)


def test_alert_figures_at_a_fixed_threshold_and_without_a_budget() -> None:
    record = {"hist_pos": [0, 0, 1, 3], "hist_neg": [90, 5, 1, 0], "hist_amount": [0, 0, 50, 150]}
    figures = fm.alert_figures(record, fm.sigmoid(20.0), 0.0)  # the top bin only
    assert figures == {"recall_at_1pct_fpr": 0.75, "amount_recall": 0.75}
    # at 1 % FPR: one false alert of 96 is 1.04 %, so only the top bin counts
    assert fm.recall_at_fpr([0, 0, 1, 3], [90, 5, 1, 0], 0.0105) == 1.0


def test_pooled_alert_figures_match_the_raw_scores(
    regions: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Two regions' 1,600-bin answers, pooled, against scikit-learn on the pooled raw scores:
    exact at the bin-edge threshold the budget picks, recall at 1 % FPR within one bin."""
    from sklearn.metrics import precision_score, recall_score, roc_curve

    rng = np.random.default_rng(1)
    amounts = [rng.lognormal(10, 2, len(y)) for _, y in regions]
    answers = [
        fm.region_metrics(z, y, 0.5, amounts=fm.Amounts(a))
        for (z, y), a in zip(regions, amounts, strict=True)
    ]
    pooled = fm.pool(answers)
    threshold = fm.chosen_threshold(pooled, 0.02)
    figures = fm.alert_figures(pooled, threshold, 0.02)
    z, y = np.concatenate([r[0] for r in regions]), np.concatenate([r[1] for r in regions])
    amount = np.concatenate(amounts)
    predicted = fm.sigmoid(z) >= threshold
    assert figures["alert_rate_at_budget"] == pytest.approx(predicted.mean(), abs=1e-12)
    assert abs(figures["alert_rate_at_budget"] - 0.02) < 0.005  # the bins allow this close
    assert figures["precision_at_budget"] == pytest.approx(precision_score(y, predicted))
    assert figures["recall_at_budget"] == pytest.approx(recall_score(y, predicted))
    caught = amount[predicted & (y == 1)].sum() / amount[y == 1].sum()
    assert figures["amount_recall"] == pytest.approx(caught, rel=1e-9)
    fpr, tpr, _ = roc_curve(y, z)
    exact = tpr[fpr <= 0.01].max()
    assert exact - 0.02 <= figures["recall_at_1pct_fpr"] <= exact
    raw = fm.exact_alerts(z, y, amount, threshold, 0.02)
    for key, value in figures.items():
        assert raw[key] == pytest.approx(value, abs=0.02), key


def test_amount_recall_is_the_share_of_fraud_money_caught() -> None:
    z = np.array([5.0, -5.0, 5.0, -5.0, 5.0])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    amount = np.array([900.0, 100.0, 7.0, 3.0, 0.0])
    exact = fm.exact_alerts(z, y, amount, 0.5, 0.0)
    assert exact["amount_recall"] == pytest.approx(0.9)  # 900 of 1,000 caught, 2 of 3 frauds
    answer = fm.region_metrics(z, y, 0.5, bins=25, amounts=fm.Amounts(amount))
    assert fm.alert_figures(answer, 0.5, 0.0)["amount_recall"] == pytest.approx(0.9)
    clipped = fm.region_metrics(z, y, 0.5, bins=25, amounts=fm.Amounts(amount, clip=100.0))
    assert sum(clipped["hist_amount"]) == pytest.approx(200.0)  # each fraud counts up to 100
    assert fm.alert_figures(clipped, 0.5, 0.0)["amount_recall"] == pytest.approx(0.5)


def test_privatized_amount_sums_are_noised_in_units_of_their_clip() -> None:
    z = np.r_[np.full(40, 6.0), np.full(60, -6.0)]
    y = np.r_[np.ones(40), np.zeros(60)]
    amounts = fm.Amounts(np.full(100, 5_000.0), clip=1_000.0)
    zero = fm.region_metrics(z, y, 0.5, 25, 2.0, np.zeros, amounts)  # noise drawn as 0
    assert sum(zero["hist_amount"]) == pytest.approx(40 * 1_000.0)
    draws = [
        fm.region_metrics(z, y, 0.5, 25, 2.0, np.random.default_rng(s).standard_normal, amounts)
        for s in range(200)
    ]
    fraud_bin = int(np.argmax(zero["hist_amount"]))
    sums = np.array([d["hist_amount"][fraud_bin] for d in draws]) / 1_000.0
    assert sums.std() == pytest.approx(2.0, rel=0.2)  # the counts' noise, in clip units
    assert sums.mean() == pytest.approx(40, abs=0.5)
    assert all(d["hist_amount"][0] == 0 for d in draws)  # empty bins stay empty (suppressed)


def test_pooled_amounts_only_when_every_region_sent_them(
    regions: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    (z1, y1), (z2, y2) = regions
    with_sums = fm.region_metrics(z1, y1, 0.5, amounts=fm.Amounts(np.ones(len(y1))))
    without = fm.region_metrics(z2, y2, 0.5)
    assert "hist_amount" not in fm.pool([with_sums, without])
    assert "amount_recall" not in fm.alert_figures(fm.pool([with_sums, without]), 0.5, 0.0)
    assert len(fm.pool([with_sums, with_sums])["hist_amount"]) == fm.BINS


@pytest.mark.parametrize("ties", [False, True])
def test_the_lean_metrics_of_a_big_file_are_scikit_learns(ties: bool) -> None:
    """flame score --report on millions of rows computes ROC-AUC, PR-AUC and loss without
    scikit-learn's copies; the figures are the same (rounded scores: many ties)."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(4)
    y = (rng.random(200_000) < 0.01).astype(np.int8)
    logits = (rng.normal(size=len(y)) + 2.5 * y).astype(np.float32)
    if ties:
        logits = np.round(logits, 1)
    roc_auc, pr_auc = fm.lean_ranking(logits, y)
    assert roc_auc == pytest.approx(roc_auc_score(y, logits), abs=1e-12)
    assert pr_auc == pytest.approx(average_precision_score(y, logits), abs=1e-12)
    prob = fm.sigmoid(logits)
    expected = log_loss(y, np.clip(prob, 1e-7, 1 - 1e-7), labels=[0, 1])
    assert fm.lean_log_loss(prob, y, chunk=7_000) == pytest.approx(expected, abs=1e-12)
