"""flame/log.py: Flame's one-line console messages; Flower's dumps hidden unless verbose."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from flame.log import NOISY, FlameConsole, FlowerDumps, setup_logging


@pytest.fixture(autouse=True)
def _fresh_loggers() -> Iterator[None]:
    """Each test starts as a fresh process would (no Flame handler, no Flower filter) and
    leaves the loggers as it found them."""
    flame, flower = logging.getLogger("flame"), logging.getLogger("flwr")
    saved = (flame.handlers[:], flame.level, flame.propagate, flower.filters[:])
    flame.handlers.clear()
    flower.filters = [f for f in flower.filters if not isinstance(f, FlowerDumps)]
    yield
    flame.handlers[:], flame.propagate, flower.filters = saved[0], saved[2], saved[3]
    flame.setLevel(saved[1])  # setLevel, not .level: it clears the child loggers' caches


def _record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("flwr", level, __file__, 1, msg, ({"hist": [0.0] * 3},), None)


def _dumps() -> list[FlowerDumps]:
    return [f for f in logging.getLogger("flwr").filters if isinstance(f, FlowerDumps)]


def test_quiet_drops_flowers_info_dumps_whatever_their_arguments() -> None:
    quiet = FlowerDumps()
    assert quiet.quiet
    assert not any(quiet.filter(_record(msg)) for msg in NOISY)
    assert not quiet.filter(_record("\t└──> MetricRecord: %s", logging.DEBUG))
    assert quiet.filter(_record("[ROUND %s/%s]"))  # Flower's own round line stays
    # matched on the format string: the same text already formatted is not a dump
    assert quiet.filter(_record("\t└──> MetricRecord: {'loss': 1.0}"))


def test_warnings_and_errors_always_pass_and_verbose_passes_everything() -> None:
    quiet, verbose = FlowerDumps(), FlowerDumps(quiet=False)
    for level in (logging.WARNING, logging.ERROR):
        assert all(quiet.filter(_record(msg, level)) for msg in NOISY)
    assert all(verbose.filter(_record(msg)) for msg in NOISY)


def test_flames_messages_are_one_prefixed_line_on_the_console(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging()
    log = logging.getLogger("flame.client")
    log.info("eu train: %d rows", 1_000)
    log.debug("not shown at INFO")
    log.warning("eu refused: region policy")
    assert capsys.readouterr().err == (
        "INFO flame: eu train: 1000 rows\nWARNING flame: eu refused: region policy\n"
    )
    assert logging.getLogger("flame").propagate is False  # not printed twice via the root


def test_the_level_is_set_by_the_first_call_and_one_handler_stays_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging(logging.WARNING)
    setup_logging(logging.DEBUG)  # a later call adds nothing, changes nothing
    flame = logging.getLogger("flame")
    consoles = [h for h in flame.handlers if isinstance(h, FlameConsole)]
    assert len(consoles) == 1 and flame.level == logging.WARNING
    flame.info("hidden")
    flame.warning("shown once")
    assert capsys.readouterr().err == "WARNING flame: shown once\n"


def test_a_handler_someone_else_attached_does_not_stand_in_for_flames_console(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pytest 9 attaches its capture to every logger that does not propagate, and an embedding
    application may attach its own: Flame's console line is still printed, once."""
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger("flame").addHandler(other)
    setup_logging()
    setup_logging()
    logging.getLogger("flame.server").warning("round 1 failed")
    assert capsys.readouterr().err == "WARNING flame: round 1 failed\n"
    assert other.stream.getvalue() == "round 1 failed\n"  # theirs still gets it


def test_one_flower_filter_whose_choice_a_later_call_keeps_unless_it_says() -> None:
    setup_logging()
    assert len(_dumps()) == 1 and _dumps()[0].quiet  # hidden by default
    setup_logging(verbose=True)
    setup_logging()  # None: the earlier choice stays
    assert len(_dumps()) == 1 and not _dumps()[0].quiet
    setup_logging(verbose=False)
    assert len(_dumps()) == 1 and _dumps()[0].quiet


def test_the_strategy_start_banner_is_hidden_unless_verbose() -> None:
    """Flower's real banner lines (its own functions, so a changed wording shows here)."""
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg
    from flwr.serverapp.strategy.strategy_utils import log_strategy_start_info

    flower, seen = logging.getLogger("flwr"), []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep, level = Keep(), flower.level
    flower.addHandler(keep)
    flower.setLevel(logging.INFO)
    try:
        for verbose in (False, True):
            setup_logging(verbose=verbose)
            flower.info("Starting %s strategy:", "FlameStrategy")
            log_strategy_start_info(3, ArrayRecord(), None, None)
            FedAvg().summary()
            flower.info("")
            if not verbose:
                assert seen == []
    finally:
        flower.removeHandler(keep)
        flower.setLevel(level)
    assert len(seen) == 14 and seen[0] == "Starting FlameStrategy strategy:"


def test_mlflows_deprecation_warnings_are_hidden_and_others_are_not() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_logging()
        warnings.warn_explicit(
            "The noload loader strategy is deprecated", DeprecationWarning,
            "sqlalchemy_store.py", 327, module="mlflow.store.tracking.sqlalchemy_store",
        )  # fmt: skip
        warnings.warn_explicit("flame's own", DeprecationWarning, "x.py", 1, module="flame.x")
        warnings.warn_explicit("a real problem", UserWarning, "u.py", 1, module="mlflow.utils")
    assert [str(w.message) for w in caught] == ["flame's own", "a real problem"]
