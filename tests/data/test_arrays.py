"""The ``.npy`` feature cache: written block by block, read back with one ``np.load``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flame.data.arrays import NpyAppender, SplitWriter, load_split


def test_appended_blocks_read_back_as_one_array(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    out = NpyAppender(path, 3, "<f4")
    blocks = [np.arange(6).reshape(2, 3), np.arange(6, 15).reshape(3, 3), np.empty((0, 3))]
    for block in blocks:
        out.append(block)
    out.close()
    loaded = np.load(path)
    assert loaded.dtype == np.float32 and out.rows == 5
    np.testing.assert_array_equal(loaded, np.concatenate(blocks).astype(np.float32))


def test_a_block_of_another_width_names_the_file(tmp_path: Path) -> None:
    out = NpyAppender(tmp_path / "x.npy", 3, "<f4")
    with pytest.raises(ValueError, match=r"x\.npy: block shape \(2, 4\)"):
        out.append(np.zeros((2, 4)))
    out.close()


def test_the_split_writer_sends_validation_rows_to_val(tmp_path: Path) -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = (np.arange(10) % 2).astype(np.float32)
    is_val = np.arange(10) >= 7
    writer = SplitWriter(tmp_path, "region-us", 2, ("train", "val"))
    writer.append(x[:5], y[:5], is_val[:5])
    writer.append(x[5:], y[5:], is_val[5:])
    assert writer.close() == {"train": 7, "val": 3}
    vx, vy = load_split(tmp_path, "region-us", "val", 2)
    np.testing.assert_array_equal(vx, x[7:])
    np.testing.assert_array_equal(vy, y[7:])


def test_load_split_slices_the_leading_columns_and_refuses_too_few(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path, "test", 4, ("all",))
    writer.append(np.arange(8, dtype=np.float32).reshape(2, 4), np.zeros(2))
    writer.close()
    x, _ = load_split(tmp_path, "test", "all", 2, mmap=True)
    np.testing.assert_array_equal(x, [[0, 1], [4, 5]])
    with pytest.raises(ValueError, match="4 < 5 columns"):
        load_split(tmp_path, "test", "all", 5)
