"""Columnar feature cache: one region's float32 features and labels as ``.npy`` files.

A prepared split ``<folder>/<name>.{x,y}.npy`` holds every feature of ``feature_names()``
(balance-free features are a prefix, so ``drop_balances`` is a column slice). Files are written
batch by batch (the header is rewritten with the final row count on close) and read back with
one ``np.load`` each, so a ClientApp process loads millions of rows in well under a second
without pandas. This module needs only numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

SPLITS = ("train", "val")


class NpyAppender:
    """Append row blocks of a fixed width and dtype to an ``.npy`` file."""

    def __init__(self, path: Path, width: int | None, dtype: str) -> None:
        self.path, self.width, self.dtype, self.rows = path, width, np.dtype(dtype), 0
        self._file: BinaryIO = path.open("wb")  # inside an atomic_dir staging folder
        self._header_size = self._write_header()

    def _shape(self) -> tuple[int, ...]:
        return (self.rows,) if self.width is None else (self.rows, self.width)

    def _write_header(self) -> int:
        self._file.seek(0)
        header = {"descr": self.dtype.str, "fortran_order": False, "shape": self._shape()}
        np.lib.format.write_array_header_1_0(self._file, header)
        return self._file.tell()

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self._shape()[1:]:
            raise ValueError(f"{self.path}: block shape {block.shape} != rows x {self.width}")
        self._file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        end = self._file.tell()
        if self._write_header() != self._header_size:  # pragma: no cover - >1e15 rows
            raise RuntimeError(f"{self.path}: npy header grew; cannot finalise")
        self._file.seek(end)
        self._file.close()


class SplitWriter:
    """Features and labels of one part (region or test), split into train/val by a mask."""

    def __init__(self, folder: Path, name: str, width: int, splits: tuple[str, ...]) -> None:
        self.files = {
            split: (
                NpyAppender(folder / f"{name}.{split}.x.npy", width, "<f4"),
                NpyAppender(folder / f"{name}.{split}.y.npy", None, "<f4"),
            )
            for split in splits
        }

    def append(self, x: np.ndarray, y: np.ndarray, is_val: np.ndarray | None = None) -> None:
        if is_val is None:
            masks = {split: slice(None) for split in self.files}
        else:
            masks = {"train": ~is_val, "val": is_val}
        for split, (fx, fy) in self.files.items():
            fx.append(x[masks[split]])
            fy.append(y[masks[split]])

    def close(self) -> dict[str, int]:
        for fx, fy in self.files.values():
            fx.close()
            fy.close()
        return {split: fx.rows for split, (fx, _) in self.files.items()}


def load_split(
    folder: Path, name: str, split: str, width: int, mmap: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Features (first ``width`` columns) and labels of ``<name>.<split>``."""
    mode = "r" if mmap else None
    x = np.load(folder / f"{name}.{split}.x.npy", mmap_mode=mode)
    y = np.load(folder / f"{name}.{split}.y.npy", mmap_mode=mode)
    if x.shape[1] < width:
        raise ValueError(f"{folder / name}: cached features have {x.shape[1]} < {width} columns")
    return x[:, :width], y
