"""Mistakes a new user makes, each ending in one line that names the file, setting or address
(issue 27): impossible sizes, files that are not CSV, a dead registry, a run that diverges or
learns nothing, a round time-out too short. Real processes where a person would run one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flame.cli import main
from flame.data.schema import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"FLAME_MLFLOW": "false", "FLAME_TENSORBOARD": "false", "TQDM_DISABLE": "1"}


def _one_line(stderr: str, *needles: str) -> str:
    line = [x for x in stderr.splitlines() if x.startswith(("error: ", "flame"))][-1]
    assert all(n in line for n in needles), line
    assert "Traceback" not in stderr and len(line) <= 250, line
    return line


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--rows", "-5"), ("--rows", "0"), ("--rows", "1e3"), ("--fraud-rate", "2"),
     ("--fraud-rate", "0"), ("--fraud-rate", "nan"), ("--seed", "-1")],
)  # fmt: skip
def test_synth_with_an_impossible_size_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    argv = ["data", "synth", "--rows", "100", "--out", str(tmp_path / "s.csv"), flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    _one_line(capsys.readouterr().err, f"argument {flag}", repr(value))
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [('[{"step": 1, "type": "PAYMENT"}]\n', "is JSON, not CSV"),
     ('{"step": 1}\n{"step": 2}\n', "is JSON, not CSV"),
     (";".join(COLUMNS) + "\n1;PAYMENT;9.5;C1;0;0;M1;0;0;0;0\n", "separated by ';'"),
     ("\t".join(COLUMNS) + "\n1\tPAYMENT\t9.5\tC1\t0\t0\tM1\t0\t0\t0\t0\n", "separated by tabs"),
     ("|".join(COLUMNS) + "\n", "separated by '|'")],
)  # fmt: skip
def test_a_file_named_csv_that_is_not_comma_separated_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(text)
    code = main(["score", str(path), "--model", str(tmp_path / "m.pt"), "--out", "o.csv"])
    assert code == 2
    _one_line(capsys.readouterr().err, "export.csv", says)


def _silent_listener() -> socket.socket:
    """A port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("kind", ["refusing", "silent"])
def test_scoring_with_a_dead_registry_ends_in_one_line_within_seconds(
    tmp_path: Path, kind: str
) -> None:
    rows = tmp_path / "rows.csv"
    assert main(["data", "synth", "--rows", "200", "--out", str(rows)]) == 0
    listener = _silent_listener()
    port = listener.getsockname()[1]
    if kind == "refusing":
        listener.close()  # nothing listens there any more
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flame.cli", "score", str(rows), "--model",
         "models:/flame-fraud@champion", "--out", str(tmp_path / "o.csv")],
        env=os.environ | QUIET | {"FLAME_MLFLOW_TRACKING_URI": uri},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    listener.close()
    assert proc.returncode == 2, proc.stderr[-2000:]
    _one_line(proc.stderr, uri, "FLAME_MLFLOW_TRACKING_URI")
    assert elapsed < 30, f"took {elapsed:.0f} s"  # MLflow's own retries: minutes
    assert not (tmp_path / "o.csv").exists()


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "main.py", "--rounds", "2", "--rows", "5000", "--fraud-rate", "0.05",
         "--out", str(tmp_path / "run")],
        cwd=ROOT, env=os.environ | QUIET | {"FLAME_CACHE_DIR": str(tmp_path / "cache")} | env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(
    ("learning_rate", "warm_start", "hidden", "says"),
    [("1000", "20000", None, "training diverged"), ("3000", "20000", None, "training diverged"),
     # no divergence: the one hidden ReLU dies (at lr 2 with feature version 5), every row
     # gets the same score, the loss stays
     ("2", "0", "1", "training learnt nothing")],
)  # fmt: skip
def test_a_run_that_diverges_stops_names_the_setting_and_saves_no_model(
    tmp_path: Path, learning_rate: str, warm_start: str, hidden: str | None, says: str
) -> None:
    env = {"FLAME_LEARNING_RATE": learning_rate, "FLAME_PRETRAIN_ROWS": warm_start}
    proc = _run(tmp_path, env | ({"FLAME_HIDDEN_SIZES": hidden} if hidden else {}))
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _one_line(
        proc.stderr, "the run failed", says, f"FLAME_LEARNING_RATE (now {learning_rate})"
    )
    assert "no model was saved" in line
    assert not (tmp_path / "run" / "model.pt").exists()
    assert "Saved the model" not in proc.stderr + proc.stdout


@pytest.mark.integration
def test_a_round_timeout_too_short_is_named(tmp_path: Path) -> None:
    proc = _run(tmp_path, {"FLAME_ROUND_TIMEOUT": "0.3", "FLAME_MIN_LOCAL_STEPS": "3000"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    _one_line(proc.stderr, "the run failed", "FLAME_ROUND_TIMEOUT=0.3 s")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_flowers_record_dumps_stay_out_of_the_console_unless_verbose() -> None:
    """Flower logs every aggregated MetricRecord (pooled histograms: hundreds of lines a round);
    hidden by default, shown with ``verbose``; a warning always passes."""
    import logging

    from flame.log import setup_logging

    flower = logging.getLogger("flwr")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep, level = Keep(), flower.level
    flower.addHandler(keep)
    flower.setLevel(logging.INFO)  # as Flower sets it once imported
    try:
        setup_logging(verbose=False)
        flower.info("\t└──> Aggregated MetricRecord: %s", {"hist": [0.0] * 100})
        flower.info("[ROUND %s/%s]", 1, 3)
        flower.warning("\t%s", "a warning")
        setup_logging()  # the ServerApp's own call keeps the choice
        flower.info("\t%s", "final results")
        setup_logging(verbose=True)
        flower.info("\t└──> MetricRecord: %s", {"loss": 1.0})
    finally:
        flower.removeHandler(keep)
        flower.setLevel(level)
        setup_logging(verbose=False)
    assert seen == ["[ROUND 1/3]", "\ta warning", "\t└──> MetricRecord: {'loss': 1.0}"]


@pytest.mark.integration
def test_a_tracking_server_that_dies_mid_run_does_not_hold_the_run(tmp_path: Path) -> None:
    """MLflow answers at the start and dies after round 1: the run goes on without it, says
    the rounds wait in metrics.csv and how to deliver them later, finishes in about the time
    it takes without tracking and saves its model; not minutes of MLflow's retries."""
    from tests.conftest import MlflowServer

    server = MlflowServer(tmp_path / "mlflow").start()
    env = os.environ | QUIET | {"FLAME_MLFLOW": "true", "FLAME_MLFLOW_TRACKING_URI": server.uri,
                                "FLAME_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--rounds", "4", "--rows", "5000", "--fraud-rate", "0.05",
         "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if "1" in _rounds(out / "metrics.csv"):
                break
            time.sleep(0.2)
        server.stop()  # killed after round 1 was logged
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=600)
        after = time.monotonic() - killed
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 0, stderr[-3000:]
    assert after < 120, f"the run took {after:.0f} s after MLflow died"
    assert "MLflow unreachable: rounds wait in metrics.csv" in stderr, stderr[-2000:]
    assert f"flame mlflow-backfill {out}" in stderr  # how to deliver them later
    assert {"0", "1", "2", "3", "4"} <= _rounds(out / "metrics.csv")
    assert (out / "model.pt").exists()


def _rounds(table: Path) -> set[str]:
    """The rounds metrics.csv holds so far."""
    import csv

    return {row["round"] for row in csv.DictReader(table.open())} if table.exists() else set()


def test_a_launch_against_a_dead_superlink_ends_in_seconds_naming_it(tmp_path: Path) -> None:
    """`flame launch` to an address nothing listens on: Flower's own reason, then one line
    naming the address and the setting, exit 1, within a minute."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{free.getsockname()[1]}"  # closed again: nothing listens
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # flwr
    env = os.environ | QUIET | {"PATH": path, "FLAME_MLFLOW": "false"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flame.cli", "launch", "--superlink", address, "--app", str(ROOT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert time.monotonic() - started < 60
    line = proc.stderr.strip().splitlines()[-1]
    assert address in line and "FLAME_SUPERLINK" in line and len(line) <= 200, line
