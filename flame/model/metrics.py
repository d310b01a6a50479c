"""Fraud metrics: exact ones on one dataset, pooled ones across regions.

A transaction is predicted fraud when ``probability >= threshold``.

Pooling across regions never averages per-region F1 or AUC. Each region sends its confusion
counts (TP/FP/FN/TN at the threshold it was given) and two histograms of its validation logits
(frauds and non-frauds, ``BINS`` fixed logit bins). The server sums them: precision, recall, F1
and accuracy come from the summed counts; ROC-AUC and PR-AUC of the pooled validation set come
from the summed histograms (exact up to ties inside one bin of width 0.05 in logit). A region's
policy may send coarser histograms (``FLAME_POLICY_HISTOGRAM_BINS``: adjacent bins summed; the
server pools at the coarsest) or privatized ones (``FLAME_POLICY_EVAL_NOISE``: Gaussian noise
on every bin, every other figure of the answer derived from the noisy histograms). Each region's
own ROC-AUC and PR-AUC (from its own histograms, so a ClientApp never imports scikit-learn) are
reported on its own row, never combined. The server's test-set metrics are exact (scikit-learn).

Alert figures (``alert_figures``): with an alert budget (the share of rows analysts can review)
the threshold is the bin edge whose pooled validation alert rate is closest to it
(``budget_threshold``); precision, recall and alert rate at it, recall at 1 % false-positive
rate and the amount-weighted recall (share of fraud money caught, from per-bin sums of the fraud
rows' amounts, ``hist_amount``) come from the same histograms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

LOGIT_RANGE = 40.0
BINS = 1600
EDGES = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, BINS + 1)
COUNTS = ("tp", "fp", "fn", "tn")
ALERT_FIGURES = [
    "precision_at_budget", "recall_at_budget", "alert_rate_at_budget", "recall_at_1pct_fpr",
    "amount_recall",
]  # fmt: skip
FPR_CAP = 0.01  # recall_at_1pct_fpr: the recall where at most this share of non-frauds alert


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def confusion(prob: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, int]:
    pred, truth = prob >= threshold, y.astype(bool)
    return {
        "tp": int((pred & truth).sum()),
        "fp": int((pred & ~truth).sum()),
        "fn": int((~pred & truth).sum()),
        "tn": int((~pred & ~truth).sum()),
    }


def from_confusion(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tp + fp + fn + tn
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / total if total else 0.0,
    }


LEAN_ROWS = 1_000_000  # above this, ROC-AUC, PR-AUC and loss are computed in less memory


def exact_metrics(logits: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Loss (unweighted log-loss), ROC-AUC, PR-AUC, confusion and rates on one dataset."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    prob = sigmoid(logits)
    both = 0 < y.sum() < len(y)
    counts = confusion(prob, y, threshold)
    if len(y) > LEAN_ROWS:  # scikit-learn's copies of 6M rows take ~0.5 GB each (flame score)
        loss = lean_log_loss(prob, y)
        del prob  # before the sort's arrays
        roc_auc, pr_auc = lean_ranking(logits, y) if both else (math.nan, math.nan)
    else:
        loss = float(log_loss(y, np.clip(prob, 1e-7, 1 - 1e-7), labels=[0, 1]))
        roc_auc = float(roc_auc_score(y, logits)) if both else math.nan
        pr_auc = float(average_precision_score(y, logits)) if both else math.nan
    return {
        "loss": loss,
        "roc_auc": roc_auc if both else math.nan,
        "pr_auc": pr_auc if both else math.nan,
        **counts,
        **from_confusion(**counts),
        "threshold": threshold,
        "num_examples": len(y),
    }


def lean_log_loss(prob: np.ndarray, y: np.ndarray, chunk: int = 1 << 20) -> float:
    """scikit-learn's ``log_loss`` of ``prob`` clipped to [1e-7, 1 - 1e-7], a chunk at a time."""
    total = 0.0
    for i in range(0, len(y), chunk):
        p = np.clip(prob[i : i + chunk], 1e-7, 1 - 1e-7)
        total -= float(np.sum(np.where(y[i : i + chunk] > 0, np.log(p), np.log1p(-p))))
    return total / max(len(y), 1)


def lean_ranking(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and average precision as scikit-learn computes them (one stable descending
    sort, a point per distinct score), holding a few arrays of one number per row."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    ranked = scores[order]
    hits = np.cumsum(y[order] > 0, dtype=np.int64)
    del order
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last row of each score
    del ranked
    tps = hits[ends]
    del hits
    fps = 1 + ends - tps
    tpr, fpr = np.r_[0, tps] / tps[-1], np.r_[0, fps] / fps[-1]
    roc_auc = float(np.trapezoid(tpr, fpr))
    average_precision = float(np.sum(np.diff(tpr) * (tps / (tps + fps))))
    return roc_auc, average_precision


def exact_alerts(
    logits: np.ndarray, y: np.ndarray, amount: np.ndarray, threshold: float, alert_rate: float
) -> dict[str, float]:
    """The alert figures on one dataset's rows (see ``alert_figures``), exactly."""
    from sklearn.metrics import roc_curve

    pred, truth = sigmoid(logits) >= threshold, y.astype(bool)
    out = {"amount_recall": _share(amount[pred & truth].sum(), amount[truth].sum())}
    if 0 < truth.sum() < len(y):
        fpr, tpr, _ = roc_curve(y, logits)
        out["recall_at_1pct_fpr"] = float(tpr[fpr <= FPR_CAP].max())
    if alert_rate:
        out |= {
            "precision_at_budget": _share((pred & truth).sum(), pred.sum()),
            "recall_at_budget": _share((pred & truth).sum(), truth.sum()),
            "alert_rate_at_budget": _share(pred.sum(), len(y)),
        }
    return out


def _share(part: float, whole: float) -> float:
    return float(part / whole) if whole else math.nan


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean unweighted binary cross-entropy of logits (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(z) else math.nan


def region_metrics(
    logits: np.ndarray, y: np.ndarray, threshold: float, bins: int = BINS, noise: float = 0.0,
    normal: Callable[[int], np.ndarray] | None = None, amounts: Amounts | None = None,
) -> dict[str, object]:  # fmt: skip
    """What a region sends after evaluation: loss, counts, ``bins``-bin histograms and its own
    AUCs, and with ``amounts`` the per-bin sums of its fraud rows' amounts; with ``noise``, all
    of them from histograms with Gaussian noise of that std (``normal`` draws standard normals)
    on every bin: one Gaussian release of L2 sensitivity 1 per histogram (the amount sums in
    units of their clip, so one row moves them by at most 1)."""
    pos, neg = (coarsen(h, bins) for h in histograms(logits, y))
    sums = {} if amounts is None else {"hist_amount": amount_sums(logits, y, amounts, bins)}
    if noise:
        assert normal is not None
        pos, neg = (privatized(h, noise, normal) for h in (pos, neg))
        if amounts is not None:
            sums = {"hist_amount": privatized_sums(sums["hist_amount"], amounts, noise, normal)}
        return histogram_metrics(pos, neg, threshold) | sums
    return {
        "loss": log_loss(logits, y),
        **from_histograms(pos, neg),
        **confusion(sigmoid(logits), y, threshold),
        "hist_pos": pos,
        "hist_neg": neg,
        "num_examples": len(y),
    } | sums


@dataclass(frozen=True)
class Amounts:
    """Each validation row's amount, and the clip one row's amount counts up to (0: none)."""

    values: np.ndarray
    clip: float = 0.0


def amount_sums(logits: np.ndarray, y: np.ndarray, amounts: Amounts, bins: int) -> list[float]:
    """Per-bin sums of the fraud rows' amounts (each clipped to ``amounts.clip``, if set)."""
    truth = y.astype(bool)
    values = amounts.values[truth]
    if amounts.clip:
        values = np.minimum(values, amounts.clip)
    clipped = np.clip(logits[truth], -LOGIT_RANGE, LOGIT_RANGE - 1e-9)
    sums, _ = np.histogram(clipped, bins=np.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1),
                           weights=values)  # fmt: skip
    return sums.tolist()


def privatized_sums(
    sums: list[float], amounts: Amounts, noise: float, normal: Callable[[int], np.ndarray]
) -> list[float]:
    """The Gaussian mechanism on the amount sums in units of their clip (sensitivity 1), with
    the same post-processing as the counts (no rounding)."""
    noisy = np.asarray(sums, dtype=float) / amounts.clip + noise * normal(len(sums))
    noisy[noisy < SUPPRESS * noise] = 0.0
    return (noisy * amounts.clip).tolist()


def histograms(logits: np.ndarray, y: np.ndarray) -> tuple[list[int], list[int]]:
    """Counts of fraud and non-fraud logits in the fixed bins (outliers in the end bins)."""
    clipped = np.clip(logits, -LOGIT_RANGE, LOGIT_RANGE - 1e-9)
    truth = y.astype(bool)
    pos, _ = np.histogram(clipped[truth], bins=EDGES)
    neg, _ = np.histogram(clipped[~truth], bins=EDGES)
    return pos.astype(int).tolist(), neg.astype(int).tolist()


def coarsen(hist: Iterable[float], bins: int) -> list[int]:
    """A histogram summed down to ``bins`` equal bins over the same logit range."""
    return summed(hist, bins).astype(int).tolist()


def summed(hist: Iterable[float], bins: int) -> np.ndarray:
    """``hist`` (counts or sums) summed down to ``bins`` equal bins over the same logit range."""
    h = np.asarray(list(hist), dtype=float)
    if len(h) % bins:
        raise ValueError(f"cannot coarsen a {len(h)}-bin histogram to {bins} bins")
    return h.reshape(bins, -1).sum(axis=1)


SUPPRESS = 3.0  # noisy counts below this many noise stds are read as 0


def privatized(hist: list[int], noise: float, normal: Callable[[int], np.ndarray]) -> list[int]:
    """The Gaussian mechanism on counts, then post-processing (no privacy cost): a noisy count
    below SUPPRESS x ``noise`` becomes 0 (most bins are empty, and noise clipped at 0 there
    would add phantom rows everywhere: pooled PR-AUC 0.48 instead of 0.98 on a 25-bin
    example), the rest rounded."""
    noisy = np.asarray(hist, dtype=float) + noise * normal(len(hist))
    noisy[noisy < SUPPRESS * noise] = 0.0
    return np.rint(noisy).astype(int).tolist()


def centres(bins: int) -> np.ndarray:
    edges = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def histogram_metrics(pos: list[int], neg: list[int], threshold: float) -> dict[str, object]:
    """Every figure of an evaluation answer from its histograms alone: each row at its bin's
    centre logit (loss, counts at ``threshold``)."""
    p, n, z = np.asarray(pos, float), np.asarray(neg, float), centres(len(pos))
    fraud = sigmoid(z) >= threshold
    rows = p.sum() + n.sum()
    loss = float((p @ np.logaddexp(0.0, -z) + n @ np.logaddexp(0.0, z)) / rows) if rows else 0.0
    counts = {
        "tp": int(p[fraud].sum()), "fp": int(n[fraud].sum()),
        "fn": int(p[~fraud].sum()), "tn": int(n[~fraud].sum()),
    }  # fmt: skip
    return {
        "loss": loss,
        **from_histograms(p, n),
        **counts,
        "hist_pos": pos,
        "hist_neg": neg,
        "num_examples": int(rows),
    }


def _cumulative(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP when cutting above each bin edge, from the top bin down (0 first)."""
    tp = np.concatenate([[0.0], np.cumsum(pos[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(neg[::-1])])
    return tp, fp


def from_histograms(pos: Iterable[float], neg: Iterable[float]) -> dict[str, float]:
    """ROC-AUC and PR-AUC (average precision) of the scores summarised by the histograms."""
    p, n = np.asarray(list(pos), dtype=float), np.asarray(list(neg), dtype=float)
    if p.sum() == 0 or n.sum() == 0:
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    tp, fp = _cumulative(p, n)
    tpr, fpr = tp / p.sum(), fp / n.sum()
    roc_auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {"roc_auc": roc_auc, "pr_auc": _average_precision(p[::-1], n[::-1]) / p.sum()}


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Sum of precision at each fraud, bins from the top, frauds spread evenly within a bin."""
    total, tp0, fp0 = 0.0, 0.0, 0.0
    for p, n in zip(pos, neg, strict=True):
        if p:
            j = np.arange(1, int(p) + 1)
            total += float(np.sum((tp0 + j) / (tp0 + j + fp0 + j * n / p)))
        tp0, fp0 = tp0 + p, fp0 + n
    return total


UNDEFINED = (
    "PR-AUC and ROC-AUC are undefined on it: use more rows (FLAME_SYNTH_ROWS or a bigger file) "
    "or a higher fraud rate"
)


class DegenerateDataError(ValueError):
    """Rows a fraud model can neither learn from nor be scored on: one class only, or too few."""


MIN_ROWS = 50  # fewer rows than this: no region trains on them, no test set scores on them


def require_usable_rows(y: np.ndarray, what: str, consequence: str) -> None:
    """``y`` has at least MIN_ROWS rows and both classes, else one line saying what and why."""
    frauds = int(np.asarray(y).sum())
    if len(y) < MIN_ROWS:
        raise DegenerateDataError(
            f"{what}: {len(y):,} rows, fewer than the {MIN_ROWS} Flame needs; {consequence}"
        )
    if frauds == 0 or frauds == len(y):
        kind = "no fraud (isFraud=1)" if frauds == 0 else "only fraud (no isFraud=0)"
        raise DegenerateDataError(f"{what}: its {len(y):,} rows hold {kind}; {consequence}")


def best_threshold(pos: Iterable[float], neg: Iterable[float]) -> float:
    """A bin-edge probability threshold that maximises F1 on the histogrammed scores."""
    p, n = np.asarray(list(pos), dtype=float), np.asarray(list(neg), dtype=float)
    if p.sum() == 0:
        return 0.5
    tp, fp = _cumulative(p, n)
    f1 = 2 * tp / (tp + fp + p.sum())
    # cuts = number of top bins predicted fraud; when several cuts tie for the best F1, take
    # the middle one (the widest margin on both sides) rather than the most extreme
    best = np.flatnonzero(f1[1:] >= f1[1:].max() - 1e-12) + 1
    cut = int(best[len(best) // 2])
    edges = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, len(p) + 1)
    return float(sigmoid(edges[len(p) - cut]))


def pool(records: Iterable[Mapping[str, object]]) -> dict[str, float]:
    """Pooled metrics of several regions' evaluation records (see module docstring)."""
    records = list(records)
    counts = {k: sum(float(r[k]) for r in records) for k in COUNTS}  # type: ignore[arg-type]
    examples = sum(float(r["num_examples"]) for r in records)  # type: ignore[arg-type]
    bins = min(len(r["hist_pos"]) for r in records)  # type: ignore[arg-type]
    pos = np.sum([coarsen(r["hist_pos"], bins) for r in records], axis=0, dtype=float)  # type: ignore[arg-type]
    neg = np.sum([coarsen(r["hist_neg"], bins) for r in records], axis=0, dtype=float)  # type: ignore[arg-type]
    loss = sum(float(r["loss"]) * float(r["num_examples"]) for r in records) / max(examples, 1)  # type: ignore[arg-type]
    amounts = {}  # only when every region sent them: a partial sum would understate the money
    if all("hist_amount" in r for r in records):
        pooled = np.sum([summed(r["hist_amount"], bins) for r in records], axis=0)  # type: ignore[arg-type]
        amounts = {"hist_amount": pooled.tolist()}
    return amounts | {
        "loss": loss,
        **from_histograms(pos, neg),
        **counts,
        **from_confusion(**counts),
        "num_examples": examples,
        "hist_pos": pos.tolist(),
        "hist_neg": neg.tolist(),
    }


def edge_threshold(bins: int, cut: int) -> float:
    """The probability threshold that flags the top ``cut`` of ``bins`` logit bins."""
    edges = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1)
    return float(sigmoid(edges[bins - cut]))


def flagged_bins(threshold: float, bins: int) -> int:
    """How many top bins a row at the bin's centre is flagged in at ``threshold`` (compared in
    logit space: the sigmoid of the top centres rounds to 1.0)."""
    if threshold <= 0:
        return bins
    cut = math.inf if threshold >= 1 else math.log(threshold) - math.log1p(-threshold)
    return int((centres(bins) >= cut).sum())


def budget_threshold(pos: Iterable[float], neg: Iterable[float], alert_rate: float) -> float:
    """The bin-edge threshold whose alert rate (rows at or above it, of all rows) is closest to
    ``alert_rate``; between two equally close, the one with fewer alerts."""
    p, n = np.asarray(list(pos), dtype=float), np.asarray(list(neg), dtype=float)
    rows = p.sum() + n.sum()
    if rows == 0:
        return 0.5
    tp, fp = _cumulative(p, n)
    cut = int(np.argmin(np.abs((tp + fp) / rows - alert_rate)))  # the first: fewest alerts
    return edge_threshold(len(p), cut)


def recall_at_fpr(pos: Iterable[float], neg: Iterable[float], max_fpr: float = FPR_CAP) -> float:
    """Recall at the lowest bin-edge threshold whose false-positive rate is at most
    ``max_fpr``."""
    p, n = np.asarray(list(pos), dtype=float), np.asarray(list(neg), dtype=float)
    if p.sum() == 0 or n.sum() == 0:
        return math.nan
    tp, fp = _cumulative(p, n)
    return float(tp[fp / n.sum() <= max_fpr + 1e-12].max() / p.sum())


def alert_figures(
    record: Mapping[str, object], threshold: float, alert_rate: float
) -> dict[str, float]:
    """The alert figures of an evaluation record (its histograms) at ``threshold``: recall at
    1 % FPR, the amount-weighted recall when it carries amount sums, and with an
    ``alert_rate`` precision, recall and alert rate at ``threshold`` (the budget's)."""
    p = np.asarray(record["hist_pos"], dtype=float)  # type: ignore[arg-type]
    n = np.asarray(record["hist_neg"], dtype=float)  # type: ignore[arg-type]
    top = len(p) - flagged_bins(threshold, len(p))
    out = {"recall_at_1pct_fpr": recall_at_fpr(p, n)}
    if "hist_amount" in record:
        money = np.asarray(record["hist_amount"], dtype=float)  # type: ignore[arg-type]
        out["amount_recall"] = _share(money[top:].sum(), money.sum())
    if alert_rate:
        tp, alerts = p[top:].sum(), p[top:].sum() + n[top:].sum()
        out |= {
            "precision_at_budget": _share(tp, alerts),
            "recall_at_budget": _share(tp, p.sum()),
            "alert_rate_at_budget": _share(alerts, p.sum() + n.sum()),
        }
    return out


def pr_auc_margin(pr_auc: float, frauds: float) -> float:
    """One standard error of a PR-AUC measured on ``frauds`` fraud rows (binomial
    approximation, sqrt(AP (1 - AP) / frauds), at least half a fraud's share): two rounds whose
    validation figures differ by less score the same as far as these rows can tell."""
    if math.isnan(pr_auc) or frauds < 1:
        return 0.0
    return max(math.sqrt(max(pr_auc * (1 - pr_auc), 0.0) / frauds), 0.5 / frauds)


def chosen_threshold(record: Mapping[str, object], alert_rate: float) -> float:
    """The threshold a round chooses on its pooled validation histograms: the alert budget's,
    else the F1-optimal one."""
    pos, neg = record["hist_pos"], record["hist_neg"]
    if alert_rate:
        return budget_threshold(pos, neg, alert_rate)  # type: ignore[arg-type]
    return best_threshold(pos, neg)  # type: ignore[arg-type]


def probability_edges(bins: int) -> list[float]:
    """The edges of ``bins`` logit bins, in probability space (``bins + 1`` of them)."""
    return sigmoid(np.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1)).tolist()
