"""Read PaySim CSVs in every format real copies use, and validate them against the schema.

Accepted number formats: plain floats (``181.0``), Java E-notation (``1.916920493E7``),
spreadsheet rounding (``1.33E+07``, integers written ``0``); labels ``0/1`` or ``0.0/1.0``.
Rows numbered in errors are 1-based data rows (the header is row 0).
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from flame.data.encode import type_codes
from flame.data.schema import (
    COLUMNS,
    LABELS,
    MAX_AMOUNT,
    MAX_STEP_INDEX,
    MONEY,
    NAMES,
    TYPES,
    PaySimFormatError,
)

log = logging.getLogger("flame.data.loader")
DEDUP_KEY = ["step", "type", "amount", "nameOrig", "nameDest"]
_NUMERIC = ("step", *MONEY, *LABELS)


def csv_files(path: Path) -> list[Path]:
    """The CSV files at ``path`` (one file, or every ``*.csv``/``*.CSV`` in a folder)."""
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as err:  # a symbolic link loop, a name too long, ...
        raise PaySimFormatError(path, f"cannot be read ({err.strerror or err})") from None
    if not exists and path.is_symlink():
        raise PaySimFormatError(path, "is a broken or looping symbolic link")
    if not exists:
        raise FileNotFoundError(
            f"PaySim data not found at {path}. Put the Kaggle file at "
            "data/PS_20174392719_1491204439457_log.csv or point FLAME_DATA_PATH/--data at a "
            "PaySim CSV; with neither, Flame uses its built-in synthetic PaySim data."
        )
    if not is_dir:
        return [_regular(path)]
    names = sorted(path.iterdir())
    for skipped in (p for p in names if ".csv." in p.name.lower()):
        log.warning("skipping %s: only plain .csv files are read (decompress it first)", skipped)
    files = [_regular(p) for p in names if p.suffix.lower() == ".csv"]
    if not files:
        raise PaySimFormatError(path, "folder holds no *.csv files")
    return files


def _regular(path: Path) -> Path:
    """``path`` if it is a regular file (not a folder, FIFO or device, which would hang)."""
    try:
        regular = path.is_file()
    except OSError as err:
        raise PaySimFormatError(path, f"cannot be read ({err.strerror or err})") from None
    if not regular:
        raise PaySimFormatError(path, "is not a regular file (a folder, FIFO or device?)")
    return path


MAX_NAME = 256
BLOCK_BYTES = 16 << 20  # CSV bytes per streamed batch (~200k PaySim rows)


def read_paysim(path: Path | str, require_labels: bool = True) -> pd.DataFrame:
    """Read one PaySim CSV or a folder of them (pooled) into a typed frame.

    In a folder, a transaction (``DEDUP_KEY``) found in several files is kept from the first
    file read (files in name order) when every copy is the same, and the rows dropped are
    counted per file in a warning; copies that differ in any column are refused with the two
    files and lines. Rows repeated inside one file are all kept. With ``require_labels=False``
    (scoring) the label columns may be absent; they read as 0.
    """
    files = csv_files(Path(path))
    if len(files) == 1:
        return read_paysim_file(files[0], require_labels)
    frames = [
        read_paysim_file(f, require_labels).assign(_file=i, _line=lambda t: t.index + 2)
        for i, f in enumerate(files)
    ]
    return _first_copies(pd.concat(frames, ignore_index=True), files)


def _first_copies(pooled: pd.DataFrame, files: list[Path]) -> pd.DataFrame:
    """``pooled`` without the rows that repeat an earlier file's (see :func:`read_paysim`)."""
    first = pooled.groupby(DEDUP_KEY, observed=True, sort=False)["_file"].transform("min")
    shared = pooled.groupby(DEDUP_KEY, observed=True, sort=False)["_file"].transform("nunique")
    values = [c for c in COLUMNS if c in pooled]
    many = pooled[shared > 1]
    variants = many.drop_duplicates(values)
    if variants.duplicated(DEDUP_KEY).any():
        clash = variants[variants.duplicated(DEDUP_KEY, keep=False)].iloc[:2]
        a, b = clash.iloc[0], clash.iloc[1]
        differ = [c for c in values if a[c] != b[c]]
        raise PaySimFormatError(
            files[int(b["_file"])], f"line {int(b['_line'])} and {files[int(a['_file'])].name} "
            f"line {int(a['_line'])} are the same transaction (step {a['step']}, {a['type']}, "
            f"amount {a['amount']}, {a['nameOrig']} -> {a['nameDest']}) with different "
            f"{', '.join(differ)}; keep one copy",
        )  # fmt: skip
    repeat = pooled["_file"] != first
    for index, count in pooled.loc[repeat, "_file"].value_counts(sort=False).sort_index().items():
        kept = sorted({files[i].name for i in first[repeat & (pooled["_file"] == index)]})
        log.warning(
            "%s: %d rows repeat rows of %s exactly and were dropped (the copy in the file "
            "read first is kept)", files[int(index)], count, ", ".join(kept),
        )  # fmt: skip
    return pooled[~repeat].drop(columns=["_file", "_line"]).reset_index(drop=True)


def iter_paysim(path: Path | str, require_labels: bool = True) -> Iterator[pd.DataFrame]:
    """Validated batches of one CSV (streamed, bounded memory) or of a folder's CSVs in turn."""
    for file in csv_files(Path(path)):
        yield from iter_paysim_file(file, require_labels)


def read_paysim_file(path: Path, require_labels: bool = True) -> pd.DataFrame:
    return pd.concat(list(iter_paysim_file(path, require_labels)), ignore_index=True)


def iter_paysim_file(
    path: Path,
    require_labels: bool = True,
    block_bytes: int = BLOCK_BYTES,
    stream: BinaryIO | None = None,
) -> Iterator[pd.DataFrame]:
    """Validated batches of one CSV, read by pyarrow's streaming reader (about ``block_bytes``
    of CSV each); from ``stream`` (``path`` opened, e.g. wrapped by a progress bar) if given."""
    names = header(path)
    optional = () if require_labels else LABELS
    missing = [c for c in COLUMNS if c not in names and c not in optional]
    extra = [c if len(c) <= 40 else c[:37] + "..." for c in names if c not in COLUMNS]
    if missing or extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise PaySimFormatError(
            path, f"header does not match PaySim: missing {missing}, unexpected {extra[:5]}{more}"
        )
    if len(set(names)) != len(names):
        raise PaySimFormatError(path, "header repeats a column name")
    types = {c: pa.float64() for c in _NUMERIC} | {c: pa.string() for c in ("type", *NAMES)}
    offset = 0
    try:
        reader = pacsv.open_csv(
            path if stream is None else stream,
            read_options=pacsv.ReadOptions(block_size=block_bytes),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
        for batch in reader:
            if batch.num_rows == 0:
                continue
            frame = batch.to_pandas()
            for column in optional:
                if column not in frame:
                    frame[column] = 0.0
            yield validate(frame[list(COLUMNS)], path, offset)
            offset += batch.num_rows
    except (pa.ArrowException, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, PaySimFormatError):
            raise
        raise _locate_error(path, err) from None
    if offset == 0:
        raise PaySimFormatError(path, "no data rows after the header")


MAGIC = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
MAX_FIELD = 1 << 16  # bytes; PaySim fields are at most ~20


SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}  # what spreadsheets use instead of ','


def header(path: Path) -> list[str]:
    """The column names of ``path``'s first line (checked: plain UTF-8 text, not empty)."""
    with path.open("rb") as handle:
        start = handle.read(8)
        handle.seek(0)
        first_bytes = handle.readline(MAX_FIELD)
    for magic, kind in MAGIC.items():
        if start.startswith(magic):
            raise PaySimFormatError(
                path, f"file is {kind}-compressed; decompress it to a plain .csv first"
            )
    try:
        first = first_bytes.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
    except UnicodeDecodeError as err:
        raise PaySimFormatError(path, f"header is not UTF-8 text (byte {err.start})") from None
    if not first.strip():
        raise PaySimFormatError(path, "file is empty")
    if "\r" in first:
        raise PaySimFormatError(
            path, "lines end in a bare CR (old Mac style); convert them to LF or CRLF line ends"
        )
    if first.lstrip()[:1] in ("{", "["):
        raise PaySimFormatError(
            path, "file is JSON, not CSV; export the rows as comma-separated PaySim CSV"
        )
    names = next(csv.reader([first]))  # R and spreadsheets quote every field: "step","type"
    for mark, name in SEPARATORS.items():
        if len(names) == 1 and mark in first:
            raise PaySimFormatError(
                path, f"columns are separated by {name}; PaySim CSVs use commas (re-export it, "
                "or in pandas: read_csv(sep=...).to_csv(index=False))",
            )  # fmt: skip
    if any(n != n.strip() for n in names):
        raise PaySimFormatError(
            path, "the header has spaces around column names (e.g. ', type'); write the CSV "
            "without spaces after the commas",
        )  # fmt: skip
    return names


def _locate_error(path: Path, err: Exception) -> PaySimFormatError:
    """Re-read as text to name the first bad row (and column, value) behind a pyarrow error."""
    return (
        _scan_rows(path)
        or _scan_numbers(path)
        or PaySimFormatError(path, str(err).splitlines()[0] if str(err) else type(err).__name__)
    )


def _scan_rows(path: Path) -> PaySimFormatError | None:
    """Structural problems: encoding, field counts, repeated headers, oversized fields."""
    previous = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD)
    row = 0
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = [c.strip().lstrip("\ufeff") for c in next(reader, [])]
            for row, fields in enumerate(reader, start=1):
                if [f.strip() for f in fields] == header:
                    return PaySimFormatError(path, "repeated header line", row=row)
                if len(fields) != len(header):
                    problem = f"has {len(fields)} fields, the header has {len(header)}"
                    return PaySimFormatError(path, problem + " (truncated line?)", row=row)
    except UnicodeDecodeError as uerr:
        return PaySimFormatError(path, f"not UTF-8 text at byte {uerr.start}")
    except csv.Error as cerr:
        return PaySimFormatError(path, f"unreadable CSV ({cerr})", row=row + 1)
    finally:
        csv.field_size_limit(previous)
    return None


def _scan_numbers(path: Path) -> PaySimFormatError | None:
    offset = 0
    try:
        for raw in pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8", chunksize=200_000
        ):
            if found := _first_non_number(path, raw, offset):
                return found
            offset += len(raw)
    except pd.errors.ParserError as err:  # e.g. a quote opened and never closed
        problem = str(err).splitlines()[0].removeprefix("Error tokenizing data. C error: ")
        return PaySimFormatError(path, f"unreadable CSV ({problem})")
    return None


def _first_non_number(path: Path, raw: pd.DataFrame, offset: int) -> PaySimFormatError | None:
    for column in _NUMERIC:
        if column not in raw:
            continue
        parsed = pd.to_numeric(raw[column], errors="coerce")
        bad = (parsed.isna() & (raw[column].str.strip() != "")).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return PaySimFormatError(
                path, "not a number", column, offset + i + 1, raw[column].iloc[i]
            )
    return None


def validate(frame: pd.DataFrame, path: Path | str = "<frame>", offset: int = 0) -> pd.DataFrame:
    """Check values and return the frame with the schema's dtypes.

    ``offset`` is the number of data rows before this frame (for row numbers in errors).
    """
    return pd.DataFrame(check_columns(frame, path, offset), columns=list(COLUMNS))


def check_columns(
    columns: Mapping[str, Any], path: Path | str = "<rows>", offset: int = 0
) -> dict[str, Any]:
    """``validate`` for columns of any array type (a frame, or a scorer's arrays built from
    its request): the checked columns with the schema's dtypes, the type as a Categorical."""
    path = Path(path)

    def _first_bad(column: str, bad: np.ndarray, problem: str) -> None:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = np.asarray(columns[column], dtype=object)[i]
            raise PaySimFormatError(path, problem, column, offset + i + 1, value)

    numbers = {}
    for column in _NUMERIC:
        numbers[column] = _floats(columns[column])
        _first_bad(column, ~np.isfinite(numbers[column]), "missing or not finite")
    for column in MONEY:
        _first_bad(column, numbers[column] < 0, "negative amount")
    _first_bad("amount", numbers["amount"] >= MAX_AMOUNT, f"amount of {MAX_AMOUNT:,.0f} or more")
    step = numbers["step"]
    _first_bad("step", (step != np.round(step)) | (step < 0), "step is not an hour index")
    _first_bad("step", step > MAX_STEP_INDEX, f"step beyond {MAX_STEP_INDEX:,}")
    for column in LABELS:
        label = numbers[column]
        _first_bad(column, (label != 0) & (label != 1), "label is not 0 or 1")
    codes = type_codes(columns["type"])
    _first_bad("type", codes < 0, f"unknown type (expected {TYPES})")
    names = {}
    for column in NAMES:
        names[column], text = _strings(columns[column])
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), True)
        blank = blank.to_numpy(zero_copy_only=False)
        _first_bad(column, blank, "empty account name")
        length = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
        _first_bad(column, length > MAX_NAME, f"account name longer than {MAX_NAME} characters")
    return {
        "step": step.astype("int32"),
        "type": pd.Categorical.from_codes(codes, dtype=type_dtype()),
        **{c: numbers[c] for c in MONEY},
        **names,
        **{c: numbers[c].astype("int8") for c in LABELS},
    }


@functools.cache
def type_dtype() -> pd.CategoricalDtype:
    return pd.CategoricalDtype(TYPES)


def _floats(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(values, dtype="float64")  # None -> nan; a string -> ValueError


def _strings(values: Any) -> tuple[np.ndarray, pa.Array]:
    """Each name as a str (object array), and the same as an Arrow string array."""
    names = np.asarray(values, dtype=object)
    try:
        text = pa.array(names, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # numbers, bytes, ...: as pandas shows them
        names = pd.Series(names).astype("str").to_numpy(dtype=object)
        text = pa.array(names, type=pa.string())
    return names, text
