"""This process's MLflow login (FLAME_MLFLOW_CREDENTIALS, MLflow's credentials format, read
once) and the one-line reasons when MLflow refuses it (the real basic-auth server:
tests/track/test_mlflow_auth.py)."""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flame.ops.local_deployment import free_port
from flame.settings import SettingsError, load_settings
from flame.track import access
from flame.track.access import (
    PASSWORD_ENV,
    USER_ENV,
    MlflowAccessError,
    check_access,
    login,
    read_credentials,
    refused,
    short,
    write_credentials,
    write_secret,
)  # fmt: skip

SEARCH = "/api/2.0/mlflow/experiments/search"


@pytest.fixture(autouse=True)
def _no_login(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts anonymous and reads credentials afresh; its login is undone after."""
    for name in (USER_ENV, PASSWORD_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    access._read_once.cache_clear()
    yield
    access._read_once.cache_clear()


class Answer(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status``; keeps each request's path and
    Authorization header."""

    def _answer(self) -> None:
        server = self.server
        server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        body = b"Permission denied" if server.status in (401, 403) else b"{}"  # type: ignore[attr-defined]
        self.send_response(server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class Stub:
    """An HTTP server on a loopback port that answers with a chosen status (what MLflow's
    basic-auth app says to a login it refuses)."""

    def __init__(self, status: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.server.status, self.server.seen = status, []  # type: ignore[attr-defined]
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.server.seen  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[type[Stub]]:
    made: list[Stub] = []

    class Started(Stub):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            made.append(self)

    yield Started
    for one in made:
        one.close()


def test_credentials_round_trip_in_mlflows_format_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets" / "writer" / "credentials"  # parent folders are made
    password = "p%(x)s=;#: q"  # no interpolation, no comments: every character is kept
    write_credentials(path, "flame-writer", password)
    assert path.read_text() == (
        "[mlflow]\nmlflow_tracking_username = flame-writer\n"
        f"mlflow_tracking_password = {password}\n"
    )
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_credentials(path) == ("flame-writer", password)
    # MLflow's own spelling of the file, upper-case keys included, reads the same
    path.write_text("[mlflow]\nMLFLOW_TRACKING_USERNAME=a\nMLFLOW_TRACKING_PASSWORD=b\n")
    assert read_credentials(path) == ("a", "b")


def test_write_secret_replaces_a_readable_file_with_an_owner_only_one(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old secret, world-readable")
    path.chmod(0o644)
    write_secret(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no staging file left


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, r"cannot read it \(No such file or directory\)"),
        ("", "needs \\[mlflow\\] mlflow_tracking_username and mlflow_tracking_password"),
        ("just a password\n", "not an MLflow credentials file"),
        ("[mlflow]\nmlflow_tracking_username = a\n[mlflow]\n", "not an MLflow credentials file"),
        ("[mlflow]\nmlflow_tracking_username = a\n", "needs \\[mlflow\\] mlflow_tracking_user"),
        ("[mlflow]\nmlflow_tracking_password = b\n", "needs \\[mlflow\\]"),
        ("[MLflow]\nmlflow_tracking_username = a\nmlflow_tracking_password = b\n", "needs"),
        ("[mlflow]\nmlflow_tracking_username = a\nmlflow_tracking_password =\n", "needs"),
    ],
    ids=["missing", "empty", "no-section", "twice", "no-password", "no-user", "section-case",
         "blank-password"],
)  # fmt: skip
def test_a_missing_or_malformed_file_is_one_line_naming_the_setting_and_file(
    tmp_path: Path, text: str | None, reason: str
) -> None:
    path = tmp_path / "credentials"
    if text is not None:
        path.write_text(text)
    named = re.escape(str(path))
    with pytest.raises(SettingsError, match=f"^FLAME_MLFLOW_CREDENTIALS={named}: {reason}") as err:
        read_credentials(path)
    assert "\n" not in str(err.value)
    with pytest.raises(SettingsError, match=f"^--reader={named}: "):
        read_credentials(path, "--reader")


def test_a_folder_is_not_a_credentials_file(tmp_path: Path) -> None:
    named = re.escape(str(tmp_path))
    with pytest.raises(SettingsError, match=rf"={named}: cannot read it \(Is a directory\)"):
        read_credentials(tmp_path)


def test_a_binary_file_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_bytes(b"\xff\xfe[mlflow]\n")
    with pytest.raises(SettingsError, match="FLAME_MLFLOW_CREDENTIALS="):
        read_credentials(path)


def test_login_hands_the_file_to_mlflows_variables_and_reads_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "credentials"
    write_credentials(path, "flame-reader", "first-password")
    monkeypatch.setenv(USER_ENV, "someone-else")  # the file wins over MLflow's own variables
    monkeypatch.setenv("FLAME_MLFLOW_CREDENTIALS", str(path))
    assert login(load_settings()) == "flame-reader"
    assert (os.environ[USER_ENV], os.environ[PASSWORD_ENV]) == (
        "flame-reader", "first-password",
    )  # fmt: skip
    write_credentials(path, "flame-writer", "second-password")
    assert login(load_settings()) == "flame-reader"  # read once per process
    assert os.environ[PASSWORD_ENV] == "first-password"


def test_login_without_the_setting_leaves_mlflows_own_variables_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(USER_ENV, "from-mlflow-env")
    monkeypatch.setenv(PASSWORD_ENV, "its-password")
    assert login(load_settings()) is None
    assert os.environ[USER_ENV] == "from-mlflow-env"
    assert os.environ[PASSWORD_ENV] == "its-password"


def test_login_with_an_unreadable_file_is_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAME_MLFLOW_CREDENTIALS", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match=r"FLAME_MLFLOW_CREDENTIALS=.*missing: cannot read"):
        login(load_settings())
    assert USER_ENV not in os.environ
    write_credentials(tmp_path / "missing", "late", "pw")  # a failed read is not remembered
    assert login(load_settings()) == "late"


def test_refused_says_who_was_refused_and_what_to_fix_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = "http://mlflow:5000"
    assert refused(401, uri) == (
        "MLflow at http://mlflow:5000 refused the login of no account (401 not authenticated): "
        "set FLAME_MLFLOW_CREDENTIALS to this service's credentials file"
    )
    assert refused(403, uri) == (
        "MLflow at http://mlflow:5000 refused the request to no account (403 permission denied)"
    )
    monkeypatch.setenv(USER_ENV, "flame-reader")
    monkeypatch.setenv(PASSWORD_ENV, "hunter2-secret")
    assert refused(401, uri) == (
        "MLflow at http://mlflow:5000 refused the login of the account 'flame-reader' (401 not "
        "authenticated): check FLAME_MLFLOW_CREDENTIALS (this service's credentials file)"
    )
    denied = refused(403, uri, "moving the champion")
    assert denied == (
        "MLflow at http://mlflow:5000 refused moving the champion to the account "
        "'flame-reader' (403 permission denied)"
    )
    assert all("hunter2" not in line for line in (refused(401, uri), denied))


def test_check_access_sends_the_login_and_raises_on_401_and_403(
    stub: type[Stub], monkeypatch: pytest.MonkeyPatch
) -> None:
    anonymous = stub(401)
    with pytest.raises(MlflowAccessError, match=r"401 not authenticated.*set FLAME_MLFLOW_CRED"):
        check_access(anonymous.uri + "/")
    assert anonymous.seen == [(f"{SEARCH}?max_results=1", None)]  # no login, no header
    monkeypatch.setenv(USER_ENV, "flame-reader")
    monkeypatch.setenv(PASSWORD_ENV, "pass:word")
    forbidden = stub(403)
    with pytest.raises(MlflowAccessError) as err:
        check_access(forbidden.uri)
    assert str(err.value) == (
        f"MLflow at {forbidden.uri} refused searching experiments to the account "
        "'flame-reader' (403 permission denied)"
    )
    token = base64.b64encode(b"flame-reader:pass:word").decode()
    assert forbidden.seen == [(f"{SEARCH}?max_results=1", f"Basic {token}")]
    monkeypatch.setenv(PASSWORD_ENV, "")  # a user without a password sends no login
    no_password = stub(401)
    with pytest.raises(MlflowAccessError, match="check FLAME_MLFLOW_CREDENTIALS"):
        check_access(no_password.uri)
    assert no_password.seen[0][1] is None


def test_check_access_leaves_other_answers_and_unreachable_servers_to_the_caller(
    stub: type[Stub],
) -> None:
    for status in (200, 404, 500):
        answer = stub(status)
        check_access(f"{answer.uri}/mlflow")  # a path prefix is kept
        assert answer.seen == [(f"/mlflow{SEARCH}?max_results=1", None)]
    check_access(f"http://127.0.0.1:{free_port()}")  # nothing listens there


def test_check_access_has_nothing_to_check_for_a_local_store(tmp_path: Path) -> None:
    # a bare folder would not even be a URL urllib takes (ValueError)
    for uri in (f"sqlite:///{tmp_path}/mlflow.db", f"file://{tmp_path}/store", str(tmp_path)):
        assert check_access(uri) is None


@pytest.mark.parametrize("status", [401, 403])
def test_short_turns_mlflows_refusal_into_the_same_one_line_reason(
    stub: type[Stub], monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv(USER_ENV, "flame-reader")
    monkeypatch.setenv(PASSWORD_ENV, "secret-password")
    server = stub(status)
    with pytest.raises(MlflowException) as err:  # the message MLflow's own client makes
        MlflowClient(server.uri).search_experiments()
    assert f"error code {status}" in str(err.value)
    # MLflow's client asks the endpoint check_access probes
    assert [path.partition("?")[0] for path, _ in server.seen] == [SEARCH]
    line = short(err.value, server.uri)
    assert line == refused(status, server.uri, SEARCH if status == 403 else "")
    assert short(err.value) == refused(status, "the tracking URI", SEARCH if status == 403 else "")
    assert "secret-password" not in line and "\n" not in line


def test_short_keeps_the_first_line_of_any_other_error() -> None:
    assert short(MlflowException("RESOURCE_DOES_NOT_EXIST: no model\ntraceback...")) == (
        "RESOURCE_DOES_NOT_EXIST: no model"
    )
    assert short(ConnectionError("connection refused")) == "connection refused"
    assert short(TimeoutError()) == "TimeoutError"
