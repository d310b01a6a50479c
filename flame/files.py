"""File-system helpers: outputs that appear whole or not at all, and folders a run writes to.

A crash, a full disk or two processes building the same cache never leave a half-written
folder or file under the final name: everything is built under a hidden staging name in the
same folder and moved into place with one rename.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flame.settings import SettingsError


def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")


def old_copy(target: Path) -> Path:
    """Where ``atomic_dir(replace=True)`` keeps the previous ``target`` between its renames."""
    return target.with_name(f".{target.name}.old")


@contextmanager
def atomic_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder that becomes ``target`` if the block succeeds.

    Without ``replace``, a ``target`` that another process completed first is kept (built from
    the same inputs, it is the same). With ``replace``, an existing ``target`` is swapped out; a
    crash between the two renames leaves it in ``old_copy(target)``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(target)
    staging.mkdir()
    try:
        yield staging
        if replace:
            old = old_copy(target)
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a staging path; whatever is written there replaces ``target`` if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(target)
    try:
        yield staging
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def writable_folder(path: Path, setting: str) -> Path:
    """``path`` as a folder this process can write to (created if missing), else one line that
    names the setting: a file in the way, a read-only file system, no permission."""
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{setting} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise SettingsError(f"{setting} {path} is not writable: {err.strerror}") from None
    return path
