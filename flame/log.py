"""One-line log messages for Flame's own modules."""

from __future__ import annotations

import logging


def setup_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("flame")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s flame: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
