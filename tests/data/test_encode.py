"""flame.data.encode: the Python path for a few names or types gives what the Arrow path gives."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from flame.data import encode
from flame.data.schema import TYPES


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=encode.SMALL),
    st.integers(0, 2**63),
)
def test_a_few_names_hash_as_the_arrow_path_hashes_them(names: list[str], seed: int) -> None:
    small = encode.name_hash(pd.Series(names, dtype=object), seed)
    with patch.object(encode, "SMALL", 0):
        arrow = encode.name_hash(pd.Series(names, dtype=object), seed)
    assert small.dtype == np.uint64 and np.array_equal(small, arrow)


def test_a_few_types_code_as_the_arrow_path_codes_them() -> None:
    kinds = [*TYPES, "WIRE", "transfer"]
    for start in range(len(kinds)):
        chunk = np.array(kinds[start : start + encode.SMALL], dtype=object)
        small = encode.type_codes(chunk)
        with patch.object(encode, "SMALL", 0):
            assert np.array_equal(small, encode.type_codes(chunk))
    assert encode.type_codes(np.array(["WIRE"], dtype=object)).tolist() == [-1]
