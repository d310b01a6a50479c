"""A scorer's Prometheus metrics, and its drift figure.

Drift is the population stability index (PSI) of the scorer's last ``DRIFT_WINDOW`` scores
against the champion's pooled validation scores (``ModelCard.validation_score_*``), over ten
bins of equal validation mass: ``PSI = sum((p - q) * ln(p / q))``. Read it the usual way:
below 0.1 stable, 0.1 to 0.25 a moderate shift, above ``PSI_ALARM`` = 0.25 a shift worth an
alarm (the scores no longer look like the ones the threshold was chosen on). It is NaN until
``MIN_DRIFT_ROWS`` rows have been scored by the current champion, or when its card has no
validation histogram.
"""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flame.model.net import ModelCard

DRIFT_WINDOW = 10_000
MIN_DRIFT_ROWS = 500
PSI_ALARM = 0.25
PSI_BINS = 10
FLOOR = 1e-4  # a bin's smallest share in the PSI (an empty bin would make it infinite)
LATENCY = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
SCORES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)


def mass_edges(edges: np.ndarray, counts: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Edges (a subset of ``edges``) splitting the histogram into ``bins`` of about equal mass."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.clip(counts, 0, None))])
    if cumulative[-1] <= 0:
        return np.zeros(0)
    targets = cumulative[-1] * np.arange(1, bins) / bins
    inner = edges[np.searchsorted(cumulative, targets)]
    return np.unique(np.concatenate([[-np.inf], inner, [np.inf]]))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two histograms over the same bins (counts or shares)."""
    q = np.maximum(expected / max(expected.sum(), 1e-12), FLOOR)
    p = np.maximum(actual / max(actual.sum(), 1e-12), FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


class Drift:
    """The last scores of one champion version, against its validation scores."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.edges = np.zeros(0)
        self.expected = np.zeros(0)
        self.recent = np.zeros(DRIFT_WINDOW)
        self.seen = 0

    def add(self, scores: np.ndarray, card: ModelCard, version: str | None) -> None:
        if version != self.version:
            self.version, self.seen = version, 0
            edges = np.asarray(card.validation_score_edges, dtype=np.float64)
            counts = np.asarray(card.validation_score_counts, dtype=np.float64)
            self.edges = mass_edges(edges, counts) if len(counts) else np.zeros(0)
            if len(self.edges):
                fine = np.clip(counts, 0, None)
                self.expected = np.histogram(edges[:-1], self.edges, weights=fine)[0]
        scores = scores[-DRIFT_WINDOW:]
        at = (self.seen + np.arange(len(scores))) % DRIFT_WINDOW
        self.recent[at] = scores
        self.seen += len(scores)

    def value(self) -> float:
        if len(self.edges) < 3 or self.seen < MIN_DRIFT_ROWS:
            return math.nan
        recent = self.recent[: min(self.seen, DRIFT_WINDOW)]
        return psi(self.expected, np.histogram(recent, self.edges)[0].astype(np.float64))


class Monitor:
    """The scorer's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("flame_scorer_requests", "Requests to /predict", ["status"],
                                registry=r)  # fmt: skip
        self.latency = Histogram("flame_scorer_request_seconds", "Time to answer /predict",
                                 buckets=LATENCY, registry=r)  # fmt: skip
        self.rows = Counter("flame_scorer_rows", "Transactions scored", registry=r)
        self.alerts = Counter("flame_scorer_alerts", "Transactions at or above the threshold",
                              registry=r)  # fmt: skip
        self.scores = Histogram("flame_scorer_score", "Fraud probabilities", buckets=SCORES,
                                registry=r)  # fmt: skip
        self.drift = Drift()
        psi_gauge = Gauge("flame_scorer_score_psi", f"PSI of the last {DRIFT_WINDOW} scores "
                          f"against the champion's validation scores; alarm above {PSI_ALARM}",
                          registry=r)  # fmt: skip
        psi_gauge.set_function(self.drift.value)

    def request(self, status: int, seconds: float) -> None:
        self.requests.labels(str(status)).inc()
        self.latency.observe(seconds)

    def scored(self, scores: np.ndarray, card: ModelCard, version: str | None) -> None:
        self.rows.inc(len(scores))
        self.alerts.inc(int(np.sum(scores >= card.threshold)))
        for score in scores.tolist():
            self.scores.observe(score)
        self.drift.add(scores, card, version)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
