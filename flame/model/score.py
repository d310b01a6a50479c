"""Score a PaySim-format CSV with a saved Flame model."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from tqdm.utils import CallbackIOWrapper

from flame.data.encode import type_codes
from flame.data.features import FEATURE_VERSION, build_features
from flame.data.history import HISTORY, History, dest_hash
from flame.data.loader import csv_files, header, iter_paysim_file
from flame.data.schema import LABELS
from flame.files import atomic_file, writable_folder
from flame.model import metrics as fm
from flame.model.net import FraudMLP, ModelCard, load_model
from flame.model.train import predict_logits

log = logging.getLogger("flame.model.score")
# Rows per forward pass. float32 results depend on a pass's size, so streamed blocks are whole
# multiples of it: every row's logit is computed in the same pass shape as in the whole file.
PREDICT_ROWS = 65_536
BLOCK_ROWS = PREDICT_ROWS  # rows per streamed block (about 5 MB of PaySim CSV)
READ_BYTES = 1 << 20  # CSV bytes per block read; pyarrow reads up to 32 blocks ahead
BAR_DELAY = 1.0  # seconds before a progress bar shows: none for a quick file
HISTORY_ROWS = 200_000  # rows per History batch over an unsorted file's rows in step order


def load_scorer(model_path: Path) -> tuple[FraudMLP, ModelCard]:
    """A saved model that this Flame can score with (its feature version)."""
    model, card = load_model(model_path)
    if card.feature_version != FEATURE_VERSION:
        raise ValueError(
            f"{model_path} was trained with feature version {card.feature_version}; "
            f"this Flame builds version {FEATURE_VERSION}"
        )
    return model, card


def score_frame(model_path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``fraud_probability`` and ``is_fraud_predicted`` (stored threshold)."""
    return score_with(*load_scorer(model_path), frame)


SMALL = 64  # up to this many rows, numpy's forward pass beats torch's per-call overhead


class Forward:
    """A FraudMLP's eval-mode forward pass in numpy (Linear and ReLU; dropout is the identity),
    for the scorer's small requests: torch's dispatch costs more than the arithmetic there."""

    def __init__(self, model: FraudMLP) -> None:
        self.steps: list[tuple[np.ndarray, np.ndarray] | None] = []  # None: a ReLU
        for module in model.net:
            if isinstance(module, torch.nn.Linear):
                weight = module.weight.detach().numpy().T.copy()
                self.steps.append((weight, module.bias.detach().numpy().copy()))
            elif isinstance(module, torch.nn.ReLU):
                self.steps.append(None)
            elif not isinstance(module, torch.nn.Dropout):
                raise TypeError(f"no numpy forward pass for {type(module).__name__}")

    def logits(self, x: np.ndarray) -> np.ndarray:
        for step in self.steps:
            x = np.maximum(x, 0) if step is None else x @ step[0] + step[1]
        return x[:, 0]


def probabilities(
    model: FraudMLP,
    card: ModelCard,
    rows: Mapping[str, Any],
    history: History | None = None,
    forward: Forward | None = None,
) -> np.ndarray:
    """Fraud probability of each of ``rows`` (a validated frame or checked columns);
    ``history``: the party's earlier rows (a scorer's store); None = ``rows`` are all.
    ``forward``: the model's numpy pass, used for batches of at most ``SMALL`` rows."""
    x = build_features(rows, card.drop_balance_features, history)
    if forward is not None and len(x) <= SMALL:
        return fm.sigmoid(forward.logits(x))
    return fm.sigmoid(predict_logits(model, torch.from_numpy(x), PREDICT_ROWS))


def score_with(
    model: FraudMLP, card: ModelCard, frame: pd.DataFrame, history: History | None = None
) -> pd.DataFrame:
    probability = probabilities(model, card, frame, history)
    return frame.assign(
        fraud_probability=probability,
        is_fraud_predicted=(probability >= card.threshold).astype(np.int8),
    )


@dataclass
class Scored:
    """What ``score_file`` wrote: its row counts and the model's threshold; with ``keep``,
    every row's probability and ``isFraud`` label (9 bytes a row, for ``--report``)."""

    rows: int
    flagged: int
    threshold: float
    probability: np.ndarray
    labels: np.ndarray


class _NotInStepOrder(Exception):
    """A block of the file starts before a step an earlier block reached."""


def score_file(
    model_path: Path,
    input_csv: Path,
    out_csv: Path,
    keep: bool = False,
    block_rows: int | None = None,
) -> Scored:
    """Score every row of ``input_csv`` (input order) into ``out_csv``, streamed in blocks of
    ``block_rows`` (a multiple of PREDICT_ROWS; default BLOCK_ROWS): memory stays bounded, and
    a failure leaves no ``out_csv``. Label columns are written only if the input has them. A
    file whose rows go back in step across blocks is scored in two passes instead (its history
    features first), so the output is always the whole file's, to the byte."""
    block_rows = block_rows or BLOCK_ROWS
    if block_rows % PREDICT_ROWS:
        raise ValueError(f"block_rows {block_rows} is not a multiple of {PREDICT_ROWS}")
    path = _input_file(input_csv, out_csv)
    absent = [c for c in LABELS if c not in header(path)]
    try:
        scored = _stream(model_path, path, out_csv, absent, None, keep, block_rows)
    except _NotInStepOrder as err:
        log.warning(
            "%s; scoring it in two passes, history features first (about 40 bytes a row in "
            "memory); sort it by step to stream it in one pass", err,
        )  # fmt: skip
        history = _Replay(_history_in_step_order(path))
        scored = _stream(model_path, path, out_csv, absent, history, keep, block_rows)
    log.info("Scored %d rows of %s -> %s", scored.rows, input_csv, out_csv)
    return scored


def _input_file(input_csv: Path, out_csv: Path) -> Path:
    """The one CSV file to score (checked against ``out_csv``, whose folder must be writable)."""
    files = csv_files(input_csv)
    if len(files) != 1 or input_csv.is_dir():
        raise ValueError(f"{input_csv} is a folder; flame score takes one CSV file")
    [path] = files
    if out_csv.resolve() == path.resolve():
        raise ValueError(f"--out {out_csv} is the input file; scoring never overwrites its input")
    if out_csv.is_dir():
        raise ValueError(f"--out {out_csv} is a folder; give the CSV file to write")
    writable_folder(out_csv.parent, f"--out {out_csv}: folder")
    return path


def _stream(
    model_path: Path,
    path: Path,
    out_csv: Path,
    absent: list[str],
    history: History | None,
    keep: bool,
    block_rows: int,
) -> Scored:
    """Score ``path`` block by block into ``out_csv``; ``history`` None: a live one, which
    raises _NotInStepOrder at the first block that goes back in step."""
    live, reached = history is None, -1
    history = history or History()
    tally = _Tally(keep)
    with (
        atomic_file(out_csv) as staging,
        staging.open("w", encoding="utf-8", newline="") as sink,
        _progress(path, f"scoring {path.name}") as source,
    ):
        batches = _cut(iter_paysim_file(path, False, READ_BYTES, source), block_rows)
        first = next(batches)  # the file's first block is checked before the model is read
        model, card = load_scorer(model_path)
        for batch in itertools.chain([first], batches):
            if live:
                reached = _check_order(path, batch["step"].to_numpy(), tally.rows, reached)
            scored = score_with(model, card, batch, history)
            scored.drop(columns=absent).to_csv(sink, index=False, header=not tally.rows)
            tally.add(scored)
    return tally.result(card.threshold)


@dataclass
class _Tally:
    """The rows written so far: counts, and with ``keep`` their probabilities and labels."""

    keep: bool
    rows: int = 0
    flagged: int = 0
    parts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, scored: pd.DataFrame) -> None:
        self.rows += len(scored)
        self.flagged += int(scored["is_fraud_predicted"].sum())
        if self.keep:
            self.parts.append(
                (scored["fraud_probability"].to_numpy(), scored["isFraud"].to_numpy())
            )

    def result(self, threshold: float) -> Scored:
        probability = [p for p, _ in self.parts] or [np.zeros(0)]
        labels = [y for _, y in self.parts] or [np.zeros(0, dtype=np.int8)]
        return Scored(self.rows, self.flagged, threshold, np.concatenate(probability),
                      np.concatenate(labels))  # fmt: skip


def _check_order(path: Path, steps: np.ndarray, offset: int, reached: int) -> int:
    """The highest step so far, after the block of ``steps`` (data rows from ``offset``)."""
    back = np.flatnonzero(steps < reached)
    if len(back):
        row = offset + int(back[0]) + 1
        raise _NotInStepOrder(
            f"{path} is not in step order: row {row} has step {steps[back[0]]}, after step "
            f"{reached} in earlier rows"
        )
    return max(reached, int(steps.max()))


def _cut(batches: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """``batches`` re-cut into frames of exactly ``rows`` rows (the last one may have fewer)."""
    held: list[pd.DataFrame] = []
    for batch in batches:
        held.append(batch)
        while sum(map(len, held)) >= rows:
            joined = held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)
            held = [joined.iloc[rows:]] if len(joined) > rows else []
            yield joined.iloc[:rows].reset_index(drop=True)
    if held:
        yield pd.concat(held, ignore_index=True)


@contextmanager
def _progress(path: Path, desc: str) -> Iterator[BinaryIO]:
    """``path`` opened for reading, with a bar of the bytes read on stderr (after BAR_DELAY
    seconds; a failure clears it, so it ends in its one line)."""
    size = path.stat().st_size
    with (
        path.open("rb") as raw,
        tqdm(total=size, desc=desc, unit="B", unit_scale=True, delay=BAR_DELAY) as bar,
    ):
        try:
            yield CallbackIOWrapper(bar.update, raw, "read")
        except BaseException:
            bar.leave = False
            raise


class _Replay(History):
    """History columns computed beforehand (an unsorted file's), handed out in file order."""

    def __init__(self, columns: np.ndarray) -> None:
        super().__init__()
        self.columns, self.at = columns, 0

    def features(self, frame: Mapping[str, Any]) -> np.ndarray:
        start, self.at = self.at, self.at + len(frame["step"])
        return self.columns[start : self.at]


def _history_in_step_order(path: Path) -> np.ndarray:
    """The history columns of every row of ``path`` (file order), computed over its rows in
    step order (stably), as for the whole file; of each row only 21 bytes are kept (step,
    payee hash, type code, amount), then 20 more (its place in step order, its columns)."""
    columns: list[list[np.ndarray]] = [[], [], [], []]
    with _progress(path, f"history of {path.name} (not in step order)") as source:
        for batch in iter_paysim_file(path, False, READ_BYTES, source):
            codes = type_codes(batch["type"]).astype(np.int8)
            keys = batch["step"], dest_hash(batch["nameDest"]), codes
            for column, values in zip(columns, [*keys, batch["amount"]], strict=True):
                column.append(np.asarray(values))
    steps, payees, codes, amount = (_joined(parts) for parts in columns)
    order = np.argsort(steps, kind="stable")
    out = np.empty((len(order), len(HISTORY)), dtype=np.float32)
    history = History()
    for start in range(0, len(order), HISTORY_ROWS):
        rows = order[start : start + HISTORY_ROWS]
        out[rows] = history.of_keys(steps[rows], payees[rows], codes[rows], amount[rows])
    return out


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` as one array (the list is emptied, so only one copy is held)."""
    joined = np.concatenate(parts)
    parts.clear()
    return joined
