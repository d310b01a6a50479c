from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pandas as pd
import pytest

from flame.data.loader import read_paysim
from flame.data.schema import COLUMNS, PaySimFormatError

HEADER = ",".join(COLUMNS)
JAVA = "1,TRANSFER,1.916920493E7,C1,1.916920493E7,0.0,C2,0.0,0.0,1,0"
PANDAS = "2,PAYMENT,9839.64,C3,170136.0,160296.36,M4,0.0,0.0,0.0,0.0"
SPREADSHEET = "45,CASH_OUT,1.33E+07,C5,0,0,C6,0,1.33E+07,1,0"


def write(tmp_path: Path, *lines: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_accepts_every_real_number_format(tmp_path: Path) -> None:
    frame = read_paysim(write(tmp_path, HEADER, JAVA, PANDAS, SPREADSHEET))
    assert frame["amount"].tolist() == [19169204.93, 9839.64, 13_300_000.0]
    assert frame["isFraud"].tolist() == [1, 0, 1]
    assert str(frame["isFraud"].dtype) == "int8" and str(frame["step"].dtype) == "int32"
    assert list(frame.columns) == list(COLUMNS)


def test_column_order_may_differ(tmp_path: Path) -> None:
    cols = list(COLUMNS)[::-1]
    row = dict(zip(COLUMNS, PANDAS.split(","), strict=True))
    frame = read_paysim(write(tmp_path, ",".join(cols), ",".join(row[c] for c in cols)))
    assert frame["nameDest"].iloc[0] == "M4"


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        ("2,PAYMENT,abc,C3,1.0,0.0,M4,0.0,0.0,0,0", "amount", "abc"),
        ("2,PAYMENT,5.0,C3,1.0,0.0,M4,0.0,0.0,0,2", "isFlaggedFraud", "2"),
        ("2,PAYMENT,-5.0,C3,1.0,0.0,M4,0.0,0.0,0,0", "amount", "-5.0"),
        ("2,REFUND,5.0,C3,1.0,0.0,M4,0.0,0.0,0,0", "type", "REFUND"),
        ("2,PAYMENT,5.0,C3,,0.0,M4,0.0,0.0,0,0", "oldbalanceOrg", "nan"),
        ("2,PAYMENT,inf,C3,1.0,0.0,M4,0.0,0.0,0,0", "amount", "inf"),
        ("2.5,PAYMENT,5.0,C3,1.0,0.0,M4,0.0,0.0,0,0", "step", "2.5"),
        ("2,PAYMENT,5.0,C3,1.0,0.0,M4,0.0,0.0,0.5,0", "isFraud", "0.5"),
        # beyond the history keys' range: a 1e11 TRANSFER at step 1 would "pair" with a
        # CASH_OUT of 0 at step 2, and steps past 922,336 would overflow the int64 key
        ("2,TRANSFER,100000000000,C3,1.0,0.0,M4,0.0,0.0,0,0", "amount", "100000000000"),
        ("922337,PAYMENT,5.0,C3,1.0,0.0,M4,0.0,0.0,0,0", "step", "922337"),
    ],
)
def test_bad_values_name_file_column_row_value(
    tmp_path: Path, row: str, column: str, value: str
) -> None:
    path = write(tmp_path, HEADER, PANDAS, row)
    with pytest.raises(PaySimFormatError) as err:
        read_paysim(path)
    message = str(err.value)
    assert str(path) in message and repr(column) in message and "row 2" in message
    assert value in message


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ((), "empty"),
        ((HEADER,), "no data rows"),
        ((HEADER.replace("amount", "amt"), PANDAS), "missing ['amount'], unexpected ['amt']"),
        ((HEADER + ",extra", PANDAS + ",1"), "unexpected ['extra']"),
        ((HEADER.replace(",", ";"), PANDAS.replace(",", ";")), "separated by ';'"),
        ((HEADER, PANDAS + ",9"), "p.csv"),
    ],
)
def test_bad_files(tmp_path: Path, lines: tuple[str, ...], fragment: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(PaySimFormatError, match=None) as err:
        read_paysim(path)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        # a truncated last line (a copy cut short)
        (f"{HEADER}\n{PANDAS}\n2,PAYMENT,98", "row 2: has 3 fields, the header has 11"),
        (f"{HEADER}\n{PANDAS}\n{HEADER}\n{JAVA}\n", "row 2: repeated header line"),
        (f"{HEADER}\n{PANDAS}\n{PANDAS.replace('C3', 'C' * 100_000)}\n", "row 2"),
        (f"{HEADER}\n{PANDAS.replace('C3', 'C' * 300)}\n", "longer than 256 characters"),
        (f"{HEADER}\n{PANDAS.replace('C3', '')}\n", "empty account name"),
        (f"{HEADER}\n{PANDAS}\n{PANDAS.replace(',', ';')}\n", "row 2: has 1 fields"),
        (f"{HEADER}\n{PANDAS}\n2,PAYMENT,5.0\n", "row 2: has 3 fields"),
    ],
)
def test_structural_problems_name_the_row(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(PaySimFormatError) as err:
        read_paysim(path)
    message = str(err.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message
    assert len(message) < 300


@pytest.mark.parametrize(
    ("compress", "kind"),
    [(gzip.compress, "gzip"), (bz2.compress, "bzip2"), (lzma.compress, "xz")],
)
def test_compressed_file_with_csv_extension(tmp_path: Path, compress, kind: str) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(compress(f"{HEADER}\n{PANDAS}\n".encode()))
    with pytest.raises(PaySimFormatError, match=f"{kind}-compressed"):
        read_paysim(path)


def test_non_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes((HEADER + "\n").encode() + b"2,PAYMENT,5.0,C\xff3,1.0,0.0,M4,0.0,0.0,0,0\n")
    with pytest.raises(PaySimFormatError, match="UTF-8"):
        read_paysim(path)


def test_missing_file_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="synthetic"):
        read_paysim(tmp_path / "nope.csv")


def test_folder_is_pooled_and_deduplicated(tmp_path: Path) -> None:
    write(tmp_path, HEADER, JAVA, PANDAS, name="a.csv")
    write(tmp_path, HEADER, PANDAS, SPREADSHEET, name="b.csv")
    assert len(read_paysim(tmp_path)) == 3


def test_labels_optional_when_scoring(tmp_path: Path) -> None:
    header = ",".join(COLUMNS[:-2])
    frame = read_paysim(write(tmp_path, header, ",".join(PANDAS.split(",")[:-2])), False)
    assert frame["isFraud"].tolist() == [0]


def test_all_three_real_samples_load(real_dir: Path) -> None:
    sizes = {p.name: len(read_paysim(p)) for p in sorted(real_dir.glob("*.csv"))}
    assert sizes == {
        "head-step1-2688.csv": 2688,
        "random-sample-3000.csv": 3000,
        "steps45-95-spreadsheet-7557.csv": 7557,
    }
    pooled = read_paysim(real_dir)
    assert len(pooled) == 13_220  # 25 overlapping rows removed
    assert int(pooled["isFraud"].sum()) > 1000
    raw = pd.read_csv(real_dir / "head-step1-2688.csv", dtype=str)
    assert "E7" in "".join(raw["newbalanceDest"])  # Java E-notation really is in there


def test_a_quoted_csv_reads_like_a_plain_one(tmp_path: Path) -> None:
    quoted = [",".join(f'"{v}"' for v in line.split(",")) for line in (HEADER, JAVA, PANDAS)]
    plain = read_paysim(write(tmp_path, HEADER, JAVA, PANDAS))
    pd.testing.assert_frame_equal(read_paysim(write(tmp_path, *quoted, name="q.csv")), plain)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (f"{HEADER.replace(',', ', ')}\n{PANDAS.replace(',', ', ')}\n", "spaces around column"),
        (f"{HEADER}\r{PANDAS}\r{JAVA}\r", "bare CR"),
        (f"{HEADER}\n{PANDAS.replace('C3', '   ')}\n", "empty account name (value '   ')"),
        (f"{HEADER}\n{PANDAS.replace('2,', '3000000000,', 1)}\n", "step beyond 922,336"),
        (f"{HEADER}\n{PANDAS.replace('9839.64', 'nan')}\n", "(value nan)"),
        ("x," * 50_000 + "\n" + PANDAS, "unexpected ['x', 'x', 'x', 'x', 'x'] and"),
        # found by the fuzz test: a quote opened in the last field and never closed
        (f'{HEADER}\n{PANDAS.rsplit(",", 1)[0]},"\n', "unreadable CSV (EOF inside string"),
    ],
)
def test_malformed_inputs_are_one_short_line(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(PaySimFormatError) as err:
        read_paysim(path)
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 500


def test_a_folder_refuses_what_it_cannot_read_and_names_what_it_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    write(tmp_path, HEADER, JAVA, name="a.csv")
    write(tmp_path, HEADER, PANDAS, name="B.CSV")  # upper case is read too
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(b"x"))
    assert len(read_paysim(tmp_path)) == 2 and "c.csv.gz" in caplog.text
    (tmp_path / "sub.csv").mkdir()
    with pytest.raises(PaySimFormatError, match=r"sub\.csv: is not a regular file"):
        read_paysim(tmp_path)
    os.rmdir(tmp_path / "sub.csv")
    os.mkfifo(tmp_path / "pipe.csv")  # would block forever if opened
    with pytest.raises(PaySimFormatError, match=r"pipe\.csv: is not a regular file"):
        read_paysim(tmp_path)
    (tmp_path / "pipe.csv").unlink()
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    with pytest.raises(
        PaySimFormatError, match=r"loop\.csv: (cannot be read|is a broken or looping symbolic)"
    ):
        read_paysim(tmp_path / "loop.csv")


def test_the_same_transaction_with_two_labels_is_refused(tmp_path: Path) -> None:
    write(tmp_path, HEADER, JAVA, name="a.csv")
    write(tmp_path, HEADER, JAVA.replace(",1,0", ",0,0"), name="b.csv")
    with pytest.raises(PaySimFormatError, match=r"C1 -> C2\) with different isFraud; keep one"):
        read_paysim(tmp_path)


def test_copies_across_files_are_counted_and_conflicting_ones_refused_by_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, HEADER, PANDAS, JAVA, name="a.csv")
    write(tmp_path, HEADER, SPREADSHEET, PANDAS, PANDAS, name="b.csv")
    with caplog.at_level("WARNING", logger="flame.data.loader"):
        pooled = read_paysim(tmp_path)
    assert len(pooled) == 3  # a.csv's two rows and b.csv's new one
    (line,) = [r.getMessage() for r in caplog.records if "repeat" in r.getMessage()]
    assert line.startswith(f"{tmp_path / 'b.csv'}: 2 rows repeat rows of a.csv exactly"), line
    # inside one file every row is kept, repeats included
    assert len(read_paysim(tmp_path / "b.csv")) == 3
    # the same transaction with another balance in a later file: refused, both places named
    balances = PANDAS.split(",")
    balances[5] = str(float(balances[5]) + 1)  # newbalanceOrig
    write(tmp_path, HEADER, JAVA, ",".join(balances), name="c.csv")
    with pytest.raises(PaySimFormatError) as err:
        read_paysim(tmp_path)
    message = str(err.value)
    assert "c.csv: line 3 and a.csv line 2 are the same transaction" in message, message
    assert "with different newbalanceOrig" in message and "\n" not in message
