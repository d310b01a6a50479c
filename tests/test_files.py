from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flame.files import atomic_dir, atomic_file, old_copy, writable_folder
from flame.settings import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "part"
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "a.npy").write_text("half")
        raise RuntimeError("crashed while writing")
    assert not target.exists() and list(target.parent.iterdir()) == []  # no staging left
    with atomic_dir(target) as staging:
        (staging / "a.npy").write_text("whole")
    assert (target / "a.npy").read_text() == "whole"
    with atomic_dir(target) as staging:  # another process finished first: its copy is kept
        (staging / "a.npy").write_text("second")
    assert (target / "a.npy").read_text() == "whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["part"]


def test_atomic_dir_replace_swaps_in_the_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    for value in ("round 1", "round 2"):
        with atomic_dir(target, replace=True) as staging:
            (staging / "state.json").write_text(value)
    assert (target / "state.json").read_text() == "round 2"
    assert not old_copy(target).exists()


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "scored.csv"
    target.write_text("old")
    with pytest.raises(OSError), atomic_file(target) as staging:
        staging.write_text("partial")
        raise OSError("disk full")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_file(target) as staging:
        staging.write_text("new")
    assert target.read_text() == "new"


def test_writable_folder_names_the_setting_and_the_problem(tmp_path: Path) -> None:
    assert writable_folder(tmp_path / "new" / "run", "FLAME_OUT_DIR").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingsError, match=r"FLAME_CACHE_DIR .*file is a file, not a folder"):
        writable_folder(tmp_path / "file", "FLAME_CACHE_DIR")
    with pytest.raises(SettingsError, match=r"FLAME_OUT_DIR .* is not writable: Not a directory"):
        writable_folder(tmp_path / "file" / "sub", "FLAME_OUT_DIR")


@pytest.mark.parametrize(
    ("flag", "setting"), [("--out", "FLAME_OUT_DIR (--out)"), ("cache", "FLAME_CACHE_DIR")]
)
def test_a_file_shaped_run_or_cache_folder_is_one_line_before_any_work(
    tmp_path: Path, flag: str, setting: str
) -> None:
    (tmp_path / "taken").write_text("not a folder")
    args, env = ["--rounds", "1", "--rows", "2000"], {}
    if flag == "--out":
        args += ["--out", str(tmp_path / "taken")]
    else:
        args += ["--out", str(tmp_path / "run")]
        env["FLAME_CACHE_DIR"] = str(tmp_path / "taken")
    proc = subprocess.run(
        [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=os.environ | env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"error: {setting} {tmp_path / 'taken'} is a file, not a folder" in proc.stderr
    assert (tmp_path / "taken").read_text() == "not a folder"
