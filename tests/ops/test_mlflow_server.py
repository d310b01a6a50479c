"""The MLflow server's command line and environment, its basic-auth configuration, the admin's
login and the accounts step, against real servers on loopback: the plain one of conftest and one
basic-auth server per module started from this module's own command, environment and
configuration. What each account may do once made is in tests/track/test_mlflow_auth.py."""

from __future__ import annotations

import configparser
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from flame.ops.local_deployment import free_port, wait_healthy
from flame.ops.mlflow_server import (
    ADMIN,
    AUTH_INI,
    READER,
    SECRET_KEY,
    WRITER,
    admin_login,
    auth_environment,
    command,
    ensure_accounts,
    environment,
    logged_in,
)  # fmt: skip
from flame.settings import SettingsError
from flame.track.access import (
    PASSWORD_ENV,
    USER_ENV,
    MlflowAccessError,
    check_access,
    read_credentials,
    write_credentials,
)  # fmt: skip

EXPERIMENT, MODEL = "flame", "flame-fraud"


@pytest.fixture(autouse=True)
def _no_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts anonymous; a login a test makes is undone after it."""
    for name in (USER_ENV, PASSWORD_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@dataclass
class AuthServer:
    uri: str
    root: Path
    first: list[str]  # what the first accounts step said

    @property
    def ini(self) -> Path:
        return self.root / "admin" / AUTH_INI

    @property
    def accounts(self) -> dict[str, Path]:
        return {WRITER: self.root / "writer", READER: self.root / "reader"}

    def ensure(self, accounts: dict[str, Path] | None = None) -> list[str]:
        return ensure_accounts(self.uri, self.ini, accounts or self.accounts, EXPERIMENT, MODEL)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """``mlflow server --app-name basic-auth`` as compose runs it, its accounts made once."""
    root = tmp_path_factory.mktemp("mlflow-basic-auth")
    extra, made = auth_environment(root / "admin", f"sqlite:///{root}/basic_auth.db")
    assert made
    port, log = free_port(), root / "server.log"
    process = subprocess.Popen(
        command("127.0.0.1", port, root / "store", auth=True), env=environment(extra),
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_healthy(f"{uri}/health", process, log, timeout=90)
        server = AuthServer(uri, root, [])
        server.first = server.ensure()
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _experiment_id(server: AuthServer) -> str:
    with logged_in(*admin_login(server.ini)):
        return str(MlflowClient(server.uri).get_experiment_by_name(EXPERIMENT).experiment_id)


def _held(server: AuthServer, username: str) -> tuple[str, str]:
    """``username``'s permission on the experiment and on the registered model."""
    experiment_id = _experiment_id(server)
    with logged_in(*admin_login(server.ini)):
        auth = AuthServiceClient(server.uri)
        on_experiment = auth.get_user_permission(username, "experiment", experiment_id)
        on_model = auth.get_user_permission(username, "registered_model", MODEL)
    return on_experiment.permission, on_model.permission


def test_command_runs_one_worker_keeping_runs_and_artifacts_in_the_resolved_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = (tmp_path / "a" / "store").resolve()
    assert command("0.0.0.0", 5000, Path("a/store")) == [
        sys.executable, "-m", "mlflow", "server", "--host", "0.0.0.0", "--port", "5000",
        "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
        "--artifacts-destination", f"{store}/artifacts", "--serve-artifacts",
    ]  # fmt: skip
    assert store.is_dir()  # made, so SQLite can create the database in it


def test_command_with_auth_adds_mlflows_basic_auth_app_and_nothing_else(tmp_path: Path) -> None:
    plain = command("127.0.0.1", 5000, tmp_path)
    assert command("127.0.0.1", 5000, tmp_path, auth=True) == [
        *plain, "--app-name", "basic-auth"
    ]  # fmt: skip


def test_environment_switches_off_the_job_runner_and_git_warnings_and_extra_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")  # the caller's: overridden
    monkeypatch.setenv("FROM_OUTSIDE", "kept")
    env = environment()
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["GIT_PYTHON_REFRESH"] == "quiet" and env["FROM_OUTSIDE"] == "kept"
    assert environment({"GIT_PYTHON_REFRESH": "warn", "X": "1"})["GIT_PYTHON_REFRESH"] == "warn"
    assert os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true" and "X" not in os.environ


def test_the_server_keeps_its_runs_and_the_artifacts_it_serves_in_the_store(
    tmp_path: Path, mlflow_server: str
) -> None:
    client = MlflowClient(mlflow_server)
    run = client.create_run(client.create_experiment("kept-here"))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
    client.log_text(run.info.run_id, "hello", "notes/a.txt")
    store = tmp_path / "mlflow"  # conftest's store for this server
    (written,) = (store / "artifacts").rglob("a.txt")
    assert written.read_text() == "hello" and run.info.run_id in written.parts
    with sqlite3.connect(store / "mlflow.db") as db:
        names = {name for (name,) in db.execute("SELECT name FROM experiments")}
    assert "kept-here" in names


def test_auth_environment_makes_the_admin_login_and_secret_key_once_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env, made = auth_environment(Path("admin"), "sqlite:////data/basic_auth.db")
    ini, key = tmp_path / "admin" / AUTH_INI, tmp_path / "admin" / SECRET_KEY
    assert made
    assert env == {"MLFLOW_AUTH_CONFIG_PATH": str(ini.resolve()),  # absolute: any cwd
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": key.read_text().strip()}  # fmt: skip
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini.read_text())
    section = dict(parser["mlflow"])
    password = section.pop("admin_password")
    assert section == {
        "default_permission": "NO_PERMISSIONS", "database_uri": "sqlite:////data/basic_auth.db",
        "admin_username": ADMIN, "auth_cache_ttl_seconds": "300",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }  # fmt: skip
    assert len(password) >= 32 and len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32
    assert admin_login(ini) == (ADMIN, password)
    for path in (ini, key):
        assert path.stat().st_mode & 0o077 == 0, path
    texts = (ini.read_text(), key.read_text())
    # kept after, whatever the next start asks for
    assert auth_environment(Path("admin"), "sqlite:////elsewhere.db") == (env, False)
    assert (ini.read_text(), key.read_text()) == texts
    other, _ = auth_environment(tmp_path / "other", "sqlite:////data/basic_auth.db")
    assert admin_login(tmp_path / "other" / AUTH_INI)[1] != password
    assert other["MLFLOW_FLASK_SERVER_SECRET_KEY"] != env["MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_a_lost_secret_key_is_made_again_and_the_admin_login_kept(tmp_path: Path) -> None:
    env, _ = auth_environment(tmp_path, "sqlite:////data/basic_auth.db")
    login = admin_login(tmp_path / AUTH_INI)
    (tmp_path / SECRET_KEY).unlink()
    again, made = auth_environment(tmp_path, "sqlite:////data/basic_auth.db")
    assert not made and admin_login(tmp_path / AUTH_INI) == login
    key = again["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert key != env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert (tmp_path / SECRET_KEY).read_text() == key + "\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "cannot read it (No such file or directory)"),
        ("[other]\nadmin_username = admin\n", "no [mlflow] admin_username and admin_password"),
        ("[mlflow]\nadmin_username = admin\n", "no [mlflow] admin_username and admin_password"),
        ("admin_password = x\n", "no [mlflow] admin_username and admin_password"),
    ],
    ids=["missing", "no section", "no password", "not an ini file"],
)
def test_a_bad_admin_file_is_one_line_naming_the_flag_and_file(
    tmp_path: Path, text: str | None, reason: str
) -> None:
    ini = tmp_path / AUTH_INI
    if text is not None:
        ini.write_text(text)
    with pytest.raises(ValueError) as bad:
        admin_login(ini)
    assert str(bad.value) == f"--admin {ini}: {reason}"


def test_logged_in_sets_the_login_and_restores_the_previous_one_even_on_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(USER_ENV, "before")  # and no password before
    with logged_in("alice", "secret"):
        assert (os.environ[USER_ENV], os.environ[PASSWORD_ENV]) == ("alice", "secret")
    assert os.environ[USER_ENV] == "before" and PASSWORD_ENV not in os.environ
    with pytest.raises(KeyError), logged_in("bob", "other"):
        raise KeyError("inside")
    assert os.environ[USER_ENV] == "before" and PASSWORD_ENV not in os.environ


def test_the_first_accounts_step_makes_the_experiment_model_and_both_logins(
    auth_server: AuthServer,
) -> None:
    writer, reader = auth_server.accounts[WRITER], auth_server.accounts[READER]
    assert auth_server.first == [
        f"experiment 'flame' (id {_experiment_id(auth_server)}) created",
        "registered model 'flame-fraud' created",
        f"flame-writer: created, password made in {writer}; "
        "MANAGE on the experiment (granted) and 'flame-fraud' (granted)",
        f"flame-reader: created, password made in {reader}; "
        "READ on the experiment (granted) and 'flame-fraud' (granted)",
    ]
    assert _held(auth_server, WRITER) == ("MANAGE", "MANAGE")
    assert _held(auth_server, READER) == ("READ", "READ")
    for username, path in auth_server.accounts.items():
        assert path.stat().st_mode & 0o077 == 0
        user, password = read_credentials(path)
        assert user == username and len(password) >= 32
        assert not any(password in line for line in auth_server.first)
        with logged_in(user, password):
            check_access(auth_server.uri)  # the server takes the file's login
        with logged_in(user, password + "x"), pytest.raises(MlflowAccessError, match="401"):
            check_access(auth_server.uri)


def test_rerunning_keeps_every_file_and_sets_a_changed_password_back_to_the_files(
    auth_server: AuthServer,
) -> None:
    files = {path: path.read_text() for path in auth_server.accounts.values()}
    changed = "changed-behind-flames-back"
    writer = read_credentials(auth_server.accounts[WRITER])
    with logged_in(*admin_login(auth_server.ini)):
        AuthServiceClient(auth_server.uri).update_user_password(WRITER, changed)
    with logged_in(*writer), pytest.raises(MlflowAccessError, match="401"):
        check_access(auth_server.uri)  # the file's login no longer works
    lines = auth_server.ensure()
    assert lines == [
        f"experiment 'flame' (id {_experiment_id(auth_server)}) exists",
        "registered model 'flame-fraud' exists",
        f"flame-writer: exists, password kept in {auth_server.accounts[WRITER]}; "
        "MANAGE on the experiment (kept) and 'flame-fraud' (kept)",
        f"flame-reader: exists, password kept in {auth_server.accounts[READER]}; "
        "READ on the experiment (kept) and 'flame-fraud' (kept)",
    ]
    assert {path: path.read_text() for path in files} == files
    with logged_in(*writer):
        check_access(auth_server.uri)  # the file's password holds again
    with logged_in(WRITER, changed), pytest.raises(MlflowAccessError):
        check_access(auth_server.uri)


def test_a_grant_changed_by_hand_is_set_back_and_said_so(auth_server: AuthServer) -> None:
    experiment_id = _experiment_id(auth_server)
    with logged_in(*admin_login(auth_server.ini)):
        auth = AuthServiceClient(auth_server.uri)
        auth.revoke_user_permission(READER, "experiment", experiment_id)
        auth.grant_user_permission(READER, "experiment", experiment_id, "MANAGE")
    assert _held(auth_server, READER) == ("MANAGE", "READ")
    (line,) = auth_server.ensure({READER: auth_server.accounts[READER]})[2:]
    assert line.endswith(
        "READ on the experiment (changed from MANAGE) and 'flame-fraud' (kept)"
    ), line  # fmt: skip
    assert _held(auth_server, READER) == ("READ", "READ")


def test_an_unknown_account_is_refused_naming_the_known_ones(
    auth_server: AuthServer, tmp_path: Path
) -> None:
    with pytest.raises(ValueError) as unknown:
        auth_server.ensure({"flame-admin": tmp_path / "admin"})
    known = "accounts: flame-writer, flame-reader"
    assert str(unknown.value) == f"unknown account 'flame-admin'; {known}"
    assert not (tmp_path / "admin").exists()  # no login made for it


def test_a_credentials_file_of_another_account_or_malformed_is_refused_naming_it(
    auth_server: AuthServer, tmp_path: Path
) -> None:
    held = tmp_path / "writer"
    write_credentials(held, READER, "the-readers-password")
    with pytest.raises(ValueError) as other:
        auth_server.ensure({WRITER: held})
    assert str(other.value) == f"{held} holds the login of 'flame-reader', not 'flame-writer'"
    held.write_text("[mlflow]\nmlflow_tracking_username = flame-writer\n")
    with pytest.raises(SettingsError) as malformed:
        auth_server.ensure({WRITER: held})
    assert str(malformed.value) == (
        f"--writer={held}: needs [mlflow] mlflow_tracking_username and mlflow_tracking_password"
    )
    assert _held(auth_server, WRITER) == ("MANAGE", "MANAGE")  # untouched
    with logged_in(*read_credentials(auth_server.accounts[WRITER])):
        check_access(auth_server.uri)


def test_a_wrong_admin_password_stops_before_any_change(
    auth_server: AuthServer, tmp_path: Path
) -> None:
    ini = tmp_path / AUTH_INI
    ini.write_text(auth_server.ini.read_text().replace("admin_password = ", "admin_password = x"))
    with pytest.raises(MlflowAccessError, match="401") as refused:
        ensure_accounts(auth_server.uri, ini, {WRITER: tmp_path / "w"}, "other", "other-model")
    assert "\n" not in str(refused.value) and "'admin'" in str(refused.value)
    assert not (tmp_path / "w").exists()
    request = urllib.request.Request(f"{auth_server.uri}/api/2.0/mlflow/experiments/search")
    with pytest.raises(urllib.error.HTTPError, match="401"):  # anonymous: refused as well
        urllib.request.urlopen(request, timeout=10)
