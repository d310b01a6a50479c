"""The scorer's drift figure: PSI over ten bins of equal validation mass."""

from __future__ import annotations

import math

import numpy as np

from flame.model.net import ModelCard, new_card
from flame.ops.monitor import MIN_DRIFT_ROWS, PSI_ALARM, Drift, Monitor, mass_edges, psi


def _card(scores: np.ndarray) -> ModelCard:
    card = new_card(True, [8], 0.5)
    counts, edges = np.histogram(scores, bins=np.linspace(0, 1, 1601))
    card.validation_score_edges, card.validation_score_counts = edges.tolist(), counts.tolist()
    return card


def test_mass_edges_split_the_validation_scores_into_ten_equal_parts() -> None:
    scores = np.random.default_rng(0).beta(0.5, 8, 200_000)
    counts, edges = np.histogram(scores, bins=np.linspace(0, 1, 1601))
    cut = mass_edges(edges, counts.astype(float))
    shares = np.histogram(scores, cut)[0] / len(scores)
    finest = counts.max() / len(scores)  # an edge can be off by at most one histogram bin
    assert len(shares) == 10 and np.abs(shares - 0.1).max() <= finest


def test_psi_is_zero_for_the_same_scores_and_alarms_on_a_shift() -> None:
    rng = np.random.default_rng(1)
    reference = rng.beta(0.5, 8, 100_000)
    drift = Drift()
    drift.add(rng.beta(0.5, 8, MIN_DRIFT_ROWS - 1), _card(reference), "1")
    assert math.isnan(drift.value())  # too few rows yet
    drift.add(rng.beta(0.5, 8, 5_000), _card(reference), "1")
    assert drift.value() < 0.02
    drift.add(rng.beta(2, 4, 10_000), _card(reference), "1")  # the window now holds new scores
    assert drift.value() > PSI_ALARM
    drift.add(rng.beta(0.5, 8, 100), _card(reference), "2")  # a new champion starts afresh
    assert math.isnan(drift.value())
    assert psi(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0


def test_a_card_without_a_validation_histogram_has_no_drift_figure() -> None:
    monitor = Monitor()
    monitor.scored(np.full(1_000, 0.7), new_card(True, [8], 0.5), "1")
    text = monitor.exposition().decode()
    assert "flame_scorer_score_psi NaN" in text
    assert "flame_scorer_alerts_total 1000.0" in text and "flame_scorer_rows_total 1000.0" in text
