"""``main.py``'s runtime: the federation Flower simulates, the lines it hides, the checks it
makes before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from flame.fl.protocol import BAD_INPUT, RunFailed
from flame.ops.launch import RunEnd
from flame.ops.simulate import BOILERPLATE, Shown, failure, federation, run
from flame.settings import SettingsError, load_settings

FLOWER_LINES = {  # what Flower's simulation prints (colours as on a terminal) -> shown?
    "\x1b[93mWARNING \x1b[0m:   Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.": False,  # noqa: E501
    "\x1b[92mINFO \x1b[0m:      To change federation size, use the following command:": False,
    "\x1b[92mINFO \x1b[0m:      \tflwr federation simulation-config @none/default <superlink>": False,  # noqa: E501
    "\x1b[92mINFO \x1b[0m:      \n": False,
    "INFO :      \n": False,
    "\x1b[92mINFO \x1b[0m:      [ROUND 1/2]": True,
    "\x1b[93mWARNING \x1b[0m:   round 2 train: no reply from eu; continuing with us": True,
    "INFO flame: round 1 | server test: PR-AUC 0.3046": True,
}


@pytest.mark.parametrize(("line", "shown"), FLOWER_LINES.items())
def test_only_flowers_boilerplate_is_hidden(line: str, shown: bool) -> None:
    assert (BOILERPLATE.search(line) is None) == shown


FAILED_RUN = """\x1b[91mERROR \x1b[0m:     Simulation raised an exception
Traceback (most recent call last):
  File "flwr/simulation/app.py", line 337, in run_simulation_process
    simulation_result = _run_simulation(
                        ^^^^^^^^^^^^^^^^
  File "flame/fl/server_app.py", line 240, in main
    raise SettingsError(f"{BAD_INPUT}{err}") from err

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "flame/fl/server_app.py", line 250, in serve
flame.settings.SettingsError: bad input: the server's test set holds no fraud

\x1b[91mERROR \x1b[0m:     Exit Code: 700

An unhandled exception occurred when running the simulation.

For more information, visit: <https://flower.ai/docs/framework/1.42/en/ref-exit-codes/700.html>
\x1b[92mINFO \x1b[0m:      [ROUND 1/2]
"""


def test_a_failed_runs_traceback_is_hidden_but_the_lines_around_it_are_not() -> None:
    show = Shown()
    lines = FAILED_RUN.splitlines(keepends=True)
    assert [line for line in lines if show(line)] == [lines[0], lines[-1]]


def test_the_serverapps_reason_is_reported_as_bad_input_or_a_failed_run() -> None:
    details = f"Simulation failed with exception: {BAD_INPUT}the test set holds no fraud"
    refused = failure(RunEnd(7, "finished:failed", details))
    assert isinstance(refused, SettingsError) and str(refused) == "the test set holds no fraud"
    failed = failure(RunEnd(7, "finished:failed", "Simulation failed with exception: diverged"))
    assert type(failed) is RunFailed and str(failed) == "diverged"
    unknown = failure(RunEnd(7, "finished:stopped"))
    assert type(unknown) is RunFailed and "run 7 ended finished:stopped" in str(unknown)


def test_one_virtual_supernode_per_region_and_no_more_cpus_than_regions() -> None:
    flag, config = federation(load_settings(regions=["us", "eu", "apac"]))
    assert flag == "--federation-config"
    fields = dict(item.split("=") for item in config.split())
    assert fields["num-supernodes"] == "3"
    assert fields["client-resources-num-cpus"] == "1"
    assert 1 <= int(fields["init-args-num-cpus"]) <= 3


def test_an_earlier_runs_folder_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "metrics.csv").write_text("round\n")
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLAME_OUT_DIR", str(tmp_path))  # run() exports its flags: undone after
    with pytest.raises(SettingsError, match="holds an earlier run"):
        run({"out_dir": str(tmp_path)})
    assert not (tmp_path / "cache").exists()  # no data prepared


def test_a_superlink_that_does_not_start_is_one_line_with_its_own_last_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its log lives in a folder the run removes, so the reason is in the error itself."""
    from flame.ops import local_deployment

    broken = tmp_path / "flower-superlink"
    broken.write_text(
        "#!/bin/sh\necho 'ERROR [Errno 98] Address already in use: 127.0.0.1:9093' >&2\n"
        "echo '\033[92mINFO \033[0m: Application shutdown complete.'\nexit 1\n"
    )
    broken.chmod(0o755)
    real = local_deployment._bin
    monkeypatch.setattr(
        local_deployment, "_bin", lambda n: str(broken) if n == "flower-superlink" else real(n)
    )
    flags = {"synth_rows": "2000", "num_server_rounds": "1", "out_dir": str(tmp_path / "run")}
    for key, value in flags.items():  # run() exports its flags: undone after
        monkeypatch.setenv(f"FLAME_{key.upper()}", value)
    with pytest.raises(RunFailed) as failed:
        run(flags)
    message = str(failed.value)
    assert message.startswith("the simulation's SuperLink did not start")
    assert "process exited (1)" in message and "Address already in use" in message
    assert "\n" not in message and "see /" not in message and "shutdown" not in message


def test_resume_without_out_takes_the_newest_checkpointed_run_and_makes_no_folder(
    tmp_path: Path,
) -> None:
    """``main.py --resume true`` without --out: the run to continue, not a new empty folder
    (which the ServerApp then refused as holding no checkpoint)."""
    import os

    from flame.fl.checkpoint import FOLDER
    from flame.ops.simulate import out_folder

    runs = tmp_path / "runs"
    for name, age in (("older", 100), ("newer", 0), ("unfinished", -50)):
        if name != "unfinished":
            state = runs / name / FOLDER / "state.json"
            state.parent.mkdir(parents=True)
            state.write_text("{}")
            os.utime(state, (1e9 - age, 1e9 - age))
        else:
            (runs / name).mkdir()
    settings = load_settings(runs_dir=runs, resume=True)
    assert out_folder(settings) == runs / "newer"
    assert sorted(p.name for p in runs.iterdir()) == ["newer", "older", "unfinished"]
    with pytest.raises(SettingsError, match="no run with a checkpoint"):
        out_folder(load_settings(runs_dir=tmp_path / "empty", resume=True))
    assert not (tmp_path / "empty").exists()
