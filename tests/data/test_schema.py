"""flame/data/schema.py: a format error names the file, column, row and value."""

from __future__ import annotations

import numpy as np

from flame.data.schema import PaySimFormatError


def test_a_format_error_is_one_line_naming_where_and_what() -> None:
    err = PaySimFormatError("data/x.csv", "is not a number", column="amount", row=12, value="1,5")
    text = str(err)
    assert "\n" not in text
    assert all(part in text for part in ("data/x.csv", "'amount'", "row 12", "'1,5'"))
    assert "nan" in str(PaySimFormatError("f.csv", "is not finite", value=np.float64("nan")))
    assert "np.float64" not in str(PaySimFormatError("f.csv", "bad", value=np.float64(2.5)))
    long = str(PaySimFormatError("f.csv", "is too long", value="x" * 10_000))
    assert "10,000 characters" in long and len(long) < 200
