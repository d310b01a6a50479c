"""Authenticated MLflow (compose's): a real ``mlflow server --app-name basic-auth`` started by
``flame mlflow-server``, its accounts made by ``flame mlflow-accounts``, one server per module.

The attack first, against an unauthenticated server, where it succeeds: anyone (and the reader's
login, which such a server ignores) moves ``@champion`` and reads every region's metrics. Then
against the authenticated one, where only the writer may.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flame.cli import main
from flame.data.synth import generate, write_csv
from flame.model.net import build_model, new_card, save_model
from flame.ops.mlflow_server import AUTH_INI, READER, SECRET_KEY, WRITER, admin_login, logged_in
from flame.ops.serve import Champion
from flame.settings import load_settings
from flame.track import registry
from flame.track.access import (
    PASSWORD_ENV,
    USER_ENV,
    MlflowAccessError,
    check_access,
    login,
    read_credentials,
    write_credentials,
)  # fmt: skip
from flame.track.tracking import Tracker
from tests.conftest import ROOT, MlflowServer

MODEL, EXPERIMENT, METRIC = "flame-fraud", "flame", "client_us/pr_auc"


def _model(folder: Path, pr_auc: float, seed: int) -> tuple[Path, object]:
    card = new_card(False, [8], 0.3)
    card.metrics = {"pr_auc": pr_auc}
    path = folder / f"model{seed}.pt"
    save_model(path, build_model(card, seed=seed), card)
    return path, card


def _move_champion(uri: str, version: str) -> None:
    MlflowClient(uri).set_registered_model_alias(MODEL, "champion", version)


def _read_metric(uri: str, run_id: str) -> list[float]:
    return [m.value for m in MlflowClient(uri).get_metric_history(run_id, METRIC)]


@pytest.fixture(autouse=True)
def _no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts anonymous; a login a test makes is undone after it."""
    for name in (USER_ENV, PASSWORD_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_attack_without_auth_anyone_moves_the_champion_and_reads_metrics(
    mlflow_server: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server)
    run_id = client.create_run(client.create_experiment(EXPERIMENT)).info.run_id
    client.log_metric(run_id, METRIC, 0.8, step=1)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id)
    _move_champion(mlflow_server, "1")
    # an anonymous client: no login at all
    _move_champion(mlflow_server, "2")
    assert _read_metric(mlflow_server, run_id) == [0.8]
    # the reader's login: an unauthenticated server takes it and lets it write
    reader = tmp_path / "reader"
    write_credentials(reader, READER, "any-password")
    with logged_in(*read_credentials(reader)):
        _move_champion(mlflow_server, "1")
        client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"


@dataclass
class Stack:
    uri: str
    root: Path
    server: MlflowServer
    experiment_id: str = ""
    run_id: str = ""
    outputs: list[str] = field(default_factory=list)

    @property
    def admin(self) -> Path:
        return self.root / "admin" / AUTH_INI

    @property
    def writer(self) -> Path:
        return self.root / "writer" / "credentials"

    @property
    def reader(self) -> Path:
        return self.root / "reader" / "credentials"

    def accounts(self) -> subprocess.CompletedProcess[str]:
        """``flame mlflow-accounts`` as compose runs it: its own process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAME_", "MLFLOW_"))}
        env |= {"FLAME_MLFLOW_TRACKING_URI": self.uri, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-m", "flame.cli", "mlflow-accounts", "--admin", str(self.admin),
             "--writer", str(self.writer), "--reader", str(self.reader)],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        self.outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, proc.stderr
        return proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    wrapper = [
        sys.executable, "-m", "flame.cli", "mlflow-server", "--auth", str(root / "admin"),
        "--auth-database", f"sqlite:///{root}/basic_auth.db", "--",
    ]  # fmt: skip
    server = MlflowServer(root / "mlflow", wrapper, root / "server.log").start()
    stack = Stack(server.uri, root, server)
    try:
        stack.accounts()
        # the ServerApp's first model, as the writer: version 1, the champion
        with logged_in(*read_credentials(stack.writer)):
            mlflow.set_tracking_uri(stack.uri)
            client = MlflowClient(stack.uri)
            stack.experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
            stack.run_id = client.create_run(stack.experiment_id).info.run_id
            client.log_metric(stack.run_id, METRIC, 0.5, step=1)
            path, card = _model(root, 0.5, seed=1)
            registry.log_model(stack.run_id, path, card, MODEL, {"test_set": "abc"})
        yield stack
    finally:
        server.stop()


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_anonymous_and_wrong_logins_get_401_and_a_one_line_error_naming_the_setting(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    with pytest.raises(MlflowException, match="401"):
        _move_champion(stack.uri, "1")
    with pytest.raises(MlflowException, match="401"):
        _read_metric(stack.uri, stack.run_id)
    with pytest.raises(MlflowAccessError, match="FLAME_MLFLOW_CREDENTIALS") as refused:
        check_access(stack.uri)
    assert "401" in str(refused.value) and "\n" not in str(refused.value)
    # the scorer's and flame score's route, from the command line
    csv, out = tmp_path / "rows.csv", tmp_path / "scored.csv"
    write_csv(generate(200, seed=4, fraud_rate=0.05), csv)
    monkeypatch.setenv("FLAME_MLFLOW_TRACKING_URI", stack.uri)
    score = ["score", str(csv), "--model", f"models:/{MODEL}@champion", "--out", str(out)]
    capsys.readouterr()
    assert main(score) == 2
    assert "set FLAME_MLFLOW_CREDENTIALS" in _one_line_error(capsys)
    wrong = tmp_path / "wrong"
    write_credentials(wrong, READER, "not-the-password")
    monkeypatch.setenv("FLAME_MLFLOW_CREDENTIALS", str(wrong))
    assert main(score) == 2
    err = _one_line_error(capsys)
    assert "401" in err and "check FLAME_MLFLOW_CREDENTIALS" in err and READER in err
    monkeypatch.setenv("FLAME_MLFLOW_CREDENTIALS", str(tmp_path / "missing"))
    assert main(score) == 2
    assert f"FLAME_MLFLOW_CREDENTIALS={tmp_path / 'missing'}: cannot read" in _one_line_error(
        capsys
    )
    assert main(["serve"]) == 2  # the scorer stops at start, in one line
    assert "FLAME_MLFLOW_CREDENTIALS" in _one_line_error(capsys)
    # the ServerApp's tracker: MLflow switches off with one line; training goes on
    for name in ("FLAME_MLFLOW_CREDENTIALS", USER_ENV, PASSWORD_ENV):
        monkeypatch.delenv(name)
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("flame.track.tracking").addHandler(handler)
    try:
        tracker = Tracker(
            load_settings(mlflow=True, mlflow_tracking_uri=stack.uri), tmp_path / "run", {}
        )
    finally:
        logging.getLogger("flame.track.tracking").removeHandler(handler)
    assert "mlflow" not in tracker.sinks and "csv" in tracker.sinks
    (warning,) = [w for w in warnings if "mlflow tracking disabled" in w]
    assert "set FLAME_MLFLOW_CREDENTIALS" in warning and "\n" not in warning
    tracker.close_csv()


def test_the_reader_loads_the_champion_but_cannot_move_it_or_write(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAME_MLFLOW_CREDENTIALS", str(stack.reader))
    assert login(load_settings()) == READER
    champion = Champion(stack.uri, MODEL, reload_every=0)
    version, model = champion.current()
    assert version == "1" and model is not None  # what a scorer serves
    assert _read_metric(stack.uri, stack.run_id) == [0.5]  # reading is what it is for
    client = MlflowClient(stack.uri)
    attempts = {
        "move the champion": lambda: _move_champion(stack.uri, "1"),
        "delete the alias": lambda: client.delete_registered_model_alias(MODEL, "champion"),
        "create a run": lambda: client.create_run(stack.experiment_id),
        "log to the writer's run": lambda: client.log_metric(stack.run_id, METRIC, 1.0, step=2),
        "register a version": lambda: client.create_model_version(
            MODEL, f"runs:/{stack.run_id}/model", stack.run_id
        ),
        "take the model name": lambda: client.create_registered_model(MODEL),
    }
    for what, attempt in attempts.items():
        with pytest.raises(MlflowException, match=r"403|RESOURCE_ALREADY_EXISTS"):
            attempt()
            pytest.fail(f"the reader could {what}")
    assert _read_metric(stack.uri, stack.run_id) == [0.5]
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"


def test_the_writer_logs_a_run_registers_a_version_and_moves_the_champion(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAME_MLFLOW_CREDENTIALS", str(stack.writer))
    settings = load_settings(mlflow=True, mlflow_tracking_uri=stack.uri)
    assert login(settings) == WRITER
    tracker = Tracker(settings, tmp_path / "run", {"seed": 1})
    tracker.log("client:us", 1, "evaluate", {"pr_auc": 0.9})
    tracker.commit()
    path, card = _model(tmp_path, 0.9, seed=2)
    tracker.model(path, card, {"test_set": "abc"})
    assert "mlflow" in tracker.sinks  # no step was refused
    run_id = tracker.sinks["mlflow"].run_id
    tracker.close()
    with logged_in(*read_credentials(stack.reader)):
        client = MlflowClient(stack.uri)
        assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
        assert _read_metric(stack.uri, run_id) == [0.9]


def test_rerunning_the_accounts_step_keeps_every_password(stack: Stack) -> None:
    files = {p: p.read_text() for p in (stack.admin, stack.writer, stack.reader)}
    out = stack.accounts().stdout
    assert {p: p.read_text() for p in files} == files
    assert "password kept" in out and "made" not in out
    for path in (stack.writer, stack.reader):
        assert path.stat().st_mode & 0o077 == 0  # its owner's only
        with logged_in(*read_credentials(path)):
            check_access(stack.uri)  # still the server's password
    with logged_in(*admin_login(stack.admin)):
        check_access(stack.uri)


def test_no_password_or_key_in_any_output(stack: Stack) -> None:
    secrets = [
        admin_login(stack.admin)[1], (stack.root / "admin" / SECRET_KEY).read_text().strip(),
        read_credentials(stack.writer)[1], read_credentials(stack.reader)[1],
    ]  # fmt: skip
    outputs = [*stack.outputs, (stack.root / "server.log").read_text()]
    assert "mlflow-accounts: flame-writer" in "".join(stack.outputs)
    for secret in secrets:
        assert len(secret) >= 32
        assert not any(secret in text for text in outputs)


def test_compose_gives_each_service_only_its_own_login() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    services |= yaml.safe_load((ROOT / "docker-compose.regions.yml").read_text())["services"]
    LOGINS = ("mlflow-admin", "mlflow-writer", "mlflow-reader")

    def mounts(service: dict) -> dict[str, bool]:
        out = {}
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source, target = volume.split(":")[:2]
                out[source] = volume.endswith(":ro")
            else:
                source, target = volume["source"], volume["target"]
                out[source] = bool(volume.get("read_only"))
            assert source not in LOGINS or target == f"/secrets/{source}"
        return {k: v for k, v in out.items() if k in LOGINS}

    held = {name: mounts(s) for name, s in services.items() if mounts(s)}
    assert held == {
        "mlflow": {"mlflow-admin": False},
        "mlflow-accounts": {"mlflow-admin": True, "mlflow-writer": False, "mlflow-reader": False},
        "serverapp": {"mlflow-writer": True},
        "launcher": {"mlflow-writer": True},
        "us-scorer": {"mlflow-reader": True},  # each region's scorer reads the champion
        "eu-scorer": {"mlflow-reader": True},
    }
    readers = (("us-scorer", "reader"), ("eu-scorer", "reader"))
    for name, role in (("serverapp", "writer"), ("launcher", "writer"), *readers):
        env = services[name]["environment"]
        assert env["FLAME_MLFLOW_CREDENTIALS"] == f"/secrets/mlflow-{role}/credentials"
        assert services[name]["depends_on"]["mlflow-accounts"] == {
            "condition": "service_completed_successfully"
        }
    assert "--app-name basic-auth" in services["mlflow"]["command"]
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])  # open in basic-auth
    example = (ROOT / ".env.example").read_text()
    assert "# FLAME_MLFLOW_CREDENTIALS=\n" in example and "password =" not in example
