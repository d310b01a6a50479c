"""One-line log messages for Flame's own modules, and Flower's per-round dumps kept out of the
console unless asked for (``main.py --verbose``)."""

from __future__ import annotations

import logging
import warnings

# Flower's strategy logs every aggregated MetricRecord (pooled histograms: hundreds of lines a
# round), the run config and a final results dump; Flame's round line says what matters
NOISY = frozenset({
    "\t└──> Aggregated MetricRecord: %s", "\t└──> MetricRecord: %s", "Global evaluation",
    "\t├── ConfigRecord (train): %s", "\t├── ConfigRecord (evaluate): %s",
    "Initial global evaluation results: %s", "Final results:", "\t%s", "",
    # the strategy's start banner (Flame's own lines say the rounds, the rule and the privacy)
    "Starting %s strategy:", "\t├── Number of rounds: %d", "\t├── ArrayRecord (%.2f MB)",
    "\t├──> Sampling:", "\t│\t├──Fraction: train (%.2f) | evaluate ( %.2f)",
    "\t│\t├──Minimum nodes: train (%d) | evaluate (%d)", "\t│\t└──Minimum available nodes: %d",
    "\t└──> Keys in records:", "\t\t├── Weighted by: '%s'", "\t\t├── ArrayRecord key: '%s'",
    "\t\t└── ConfigRecord key: '%s'",
})  # fmt: skip


class FlowerDumps(logging.Filter):
    """Drops Flower's INFO dumps while ``quiet``; warnings and errors always pass."""

    def __init__(self, quiet: bool = True) -> None:
        super().__init__()
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.quiet and record.levelno <= logging.INFO and record.msg in NOISY)


class FlameConsole(logging.StreamHandler):  # type: ignore[type-arg]
    """Flame's one console handler: told apart from handlers others attach to the logger (a
    test runner's capture, an embedding application's own)."""


def setup_logging(level: int = logging.INFO, verbose: bool | None = None) -> None:
    """Flame's console handler; Flower's dumps hidden, shown with ``verbose`` (None: keep what
    an earlier call in this process chose)."""
    logger = logging.getLogger("flame")
    if not any(isinstance(h, FlameConsole) for h in logger.handlers):
        handler = FlameConsole()
        handler.setFormatter(logging.Formatter("%(levelname)s flame: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    flower = logging.getLogger("flwr")
    dumps = next((f for f in flower.filters if isinstance(f, FlowerDumps)), None)
    if dumps is None:
        dumps = FlowerDumps()
        flower.addFilter(dumps)
    if verbose is not None:
        dumps.quiet = not verbose
    if dumps.quiet:  # MLflow's own deprecations (SQLAlchemy's, pandas'): nothing a user can do
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
