"""Fuzzing the loader: any file is either accepted or refused with PaySimFormatError."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flame.data.loader import read_paysim
from flame.data.schema import PaySimFormatError
from tests.data.test_loader import HEADER, JAVA, PANDAS, SPREADSHEET

ROWS = [JAVA, PANDAS, SPREADSHEET]
JUNK = st.sampled_from(["", ",", ";", '"', '""', "\n", "\r\n", "nan", "-1", "1e999", "é", "\x00"])


@st.composite
def mutated_csv(draw: st.DrawFn) -> bytes:
    lines = [HEADER, *draw(st.lists(st.sampled_from(ROWS), min_size=0, max_size=6))]
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        fields = lines[i].split(",")
        j = draw(st.integers(0, len(fields) - 1))
        fields[j] = draw(st.one_of(JUNK, st.text(max_size=12)))
        lines[i] = ",".join(fields)
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    return data


def _accepts_or_refuses(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_bytes(data)
        try:
            frame = read_paysim(path)
        except PaySimFormatError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        else:
            assert len(frame) > 0 and frame["amount"].ge(0).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_csv())
def test_mutated_csv_is_accepted_or_refused_cleanly(data: bytes) -> None:
    _accepts_or_refuses(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_accepted_or_refused_cleanly(data: bytes) -> None:
    _accepts_or_refuses(data)


def test_cli_refuses_bad_file_in_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\n{PANDAS}\n2,PAYMENT,abc,C3,1.0,0.0,M4,0.0,0.0,0,0\n")
    for command in (
        [sys.executable, "-m", "flame.cli", "baseline", "--data", str(bad)],
        [sys.executable, "main.py", "--data", str(bad), "--rounds", "1"],
    ):
        proc = subprocess.run(
            command, capture_output=True, text=True, cwd=Path(__file__).parents[2]
        )
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        error = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert any("bad.csv" in e and "'amount'" in e and "row 2" in e for e in error), proc.stderr
