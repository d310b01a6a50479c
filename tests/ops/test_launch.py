"""``submit``: ``flwr run`` streamed, lines hidden on request, the run's final status asked for."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from flame.ops.launch import COMPLETED, RunEnd, submit

FAKE_FLWR = """#!/bin/sh
# a stand-in for Flower's CLI: `flwr run` prints what the real one does, `flwr ls` a status
echo "$@" >> "{calls}"
if [ "$1" = "run" ]; then
  echo "Successfully started run 8525020845948776479"
  echo "INFO :      Since flwr 1.32, default simulated SuperNodes changed from 10 to 2."
  echo "INFO flame: round 1 | server test: PR-AUC 0.30"
  exit {run_exit}
fi
echo '{ls}'
"""


def fake_flwr(tmp_path: Path, run_exit: int = 0, status: str = COMPLETED) -> dict[str, str]:
    """An environment whose PATH starts with a fake ``flwr``; its calls go to ``calls``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "flwr"
    run = {"run-id": 8525020845948776479, "status": status, "status-details": "exception: no"}
    runs = json.dumps({"runs": [run]})
    script.write_text(FAKE_FLWR.format(calls=tmp_path / "calls", run_exit=run_exit, ls=runs))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_submit_streams_the_log_but_hidden_lines_and_returns_the_final_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fake_flwr(tmp_path, status="finished:failed")
    hide = re.compile("default simulated SuperNodes")
    show = lambda line: not hide.search(line)  # noqa: E731
    end = submit(tmp_path, "seed=7", ("--federation-config", "x=1"), env, show, sys.stderr)
    assert end == RunEnd(8525020845948776479, "finished:failed", "exception: no")
    captured = capsys.readouterr()
    shown = captured.err
    assert captured.out == ""
    assert "round 1 | server test" in shown and "simulated SuperNodes" not in shown
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == f"run {tmp_path} flame --stream --run-config seed=7 --federation-config x=1"
    assert calls[1] == "ls flame --run-id 8525020845948776479 --format json"


def test_a_failed_flwr_run_gives_no_run_and_its_exit_code(tmp_path: Path) -> None:
    assert submit(tmp_path, "seed=7", env=fake_flwr(tmp_path, run_exit=3)) == RunEnd(None, "exit 3")
    assert len((tmp_path / "calls").read_text().splitlines()) == 1  # no status asked for


def test_submit_without_flwr_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="flwr"):
        submit(tmp_path, "seed=7", env={"PATH": str(tmp_path)})
