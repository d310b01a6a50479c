"""The MLflow tracking server's command line (make mlflow-ui, the tests, compose), defined once,
and its accounts when it runs MLflow's basic-auth app (compose).

Lean settings: one worker, no job runner; the runs in SQLite and the artifacts beside it.

Authenticated (``mlflow server --app-name basic-auth``), compose keeps three logins, each made
at first start with :func:`secrets.token_urlsafe` and kept after (never in the image, the
environment files or a command line):

- ``admin`` (MLflow's admin): only in the server's own folder (``basic_auth.ini``, with the
  Flask secret key beside it); a person logs in to the UI with it.
- ``flame-writer`` (the ServerApp and the launcher): MANAGE on Flame's experiment and registered
  model: logs runs, registers versions, moves ``@champion``.
- ``flame-reader`` (scorers): READ on both: reads the registry and downloads models.

Every other request is refused: ``default_permission`` is NO_PERMISSIONS and an anonymous one
gets 401. The experiment and the registered model are made by the admin before any service
logs in, so no other account can create (and so own) them first.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

from flame.track import access

ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "GIT_PYTHON_REFRESH": "quiet"}
AUTH_INI, SECRET_KEY = "basic_auth.ini", "flask_secret_key"
ADMIN, WRITER, READER = "admin", "flame-writer", "flame-reader"
GRANTS = {WRITER: "MANAGE", READER: "READ"}


def command(host: str, port: int, store: Path, auth: bool = False) -> list[str]:
    """``mlflow server`` on ``host:port`` keeping everything in ``store`` (created); ``auth``:
    MLflow's basic-auth app (needs :func:`auth_environment`)."""
    store.mkdir(parents=True, exist_ok=True)
    store = store.resolve()
    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
        "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
        *(["--app-name", "basic-auth"] if auth else []),
    ]  # fmt: skip


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return os.environ | ENV | (extra or {})


def auth_environment(folder: Path, database_uri: str) -> tuple[dict[str, str], bool]:
    """The basic-auth server's configuration in ``folder``, made on first use and kept after:
    ``basic_auth.ini`` (admin login, NO_PERMISSIONS by default, the user database at
    ``database_uri``) and the Flask secret key. Returns the variables ``mlflow server
    --app-name basic-auth`` needs, and whether they were made now."""
    folder.mkdir(parents=True, exist_ok=True)
    ini, key = folder / AUTH_INI, folder / SECRET_KEY
    made = not ini.exists()
    if made:
        access.write_secret(ini, (
            "# Flame's MLflow basic-auth (flame mlflow-server): made on first start, kept after.\n"
            "# The admin password is used only the first time, to create the admin user.\n"
            "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
            f"database_uri = {database_uri}\nadmin_username = {ADMIN}\n"
            f"admin_password = {secrets.token_urlsafe(24)}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "# a login is checked (PBKDF2, ~1 s) once per 5 minutes, not on every request; one\n"
            "# worker, so a password changed through the API takes effect at once\n"
            "auth_cache_ttl_seconds = 300\n"
        ))  # fmt: skip
    if not key.exists():
        access.write_secret(key, secrets.token_urlsafe(32) + "\n")
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini.resolve()),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": key.read_text().strip(),
    }, made


def admin_login(ini: Path) -> tuple[str, str]:
    """The admin's (username, password) from the server's ``basic_auth.ini``."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(ini.read_text())
        section = parser["mlflow"]
        return section["admin_username"], section["admin_password"]
    except OSError as err:
        raise ValueError(f"--admin {ini}: cannot read it ({err.strerror})") from None
    except (configparser.Error, KeyError):
        raise ValueError(f"--admin {ini}: no [mlflow] admin_username and admin_password") from None


@contextlib.contextmanager
def logged_in(username: str, password: str) -> Iterator[None]:
    """MLflow's client calls in this block use this login (the previous one after it)."""
    saved = {k: os.environ.get(k) for k in (access.USER_ENV, access.PASSWORD_ENV)}
    os.environ[access.USER_ENV], os.environ[access.PASSWORD_ENV] = username, password
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _account(path: Path, username: str) -> tuple[str, bool]:
    """The password kept in ``path`` (made now if the file does not exist yet)."""
    if path.exists():
        kept_user, password = access.read_credentials(path, f"--{username.removeprefix('flame-')}")
        if kept_user != username:
            raise ValueError(f"{path} holds the login of {kept_user!r}, not {username!r}")
        return password, False
    password = secrets.token_urlsafe(24)
    access.write_credentials(path, username, password)
    return password, True


def _grant(auth: object, username: str, kind: str, resource: str, permission: str) -> str:
    from mlflow.exceptions import RestException

    try:
        auth.grant_user_permission(username, kind, resource, permission)  # type: ignore[attr-defined]
        return "granted"
    except RestException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    held = auth.get_user_permission(username, kind, resource).permission  # type: ignore[attr-defined]
    if held == permission:
        return "kept"
    auth.revoke_user_permission(username, kind, resource)  # type: ignore[attr-defined]
    auth.grant_user_permission(username, kind, resource, permission)  # type: ignore[attr-defined]
    return f"changed from {held}"


def ensure_accounts(
    uri: str, admin_ini: Path, credentials: dict[str, Path], experiment: str, model: str
) -> list[str]:
    """As the admin: the experiment and the registered model (made first, so no account can
    own them before), then each account in ``credentials`` (``flame-writer``,
    ``flame-reader``: its file, made with a new password when missing) with its grant on both.
    Idempotent: a kept file keeps its password. One line per step, no password in any."""
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    from flame.track.tracking import ensure_experiment

    lines = []
    with logged_in(*admin_login(admin_ini)):
        access.check_access(uri)
        client, auth = MlflowClient(uri), AuthServiceClient(uri)
        existed = client.get_experiment_by_name(experiment) is not None
        experiment_id = ensure_experiment(client, experiment, uri)
        lines.append(f"experiment {experiment!r} (id {experiment_id}) "
                     f"{'exists' if existed else 'created'}")  # fmt: skip
        try:
            client.create_registered_model(model)
            lines.append(f"registered model {model!r} created")
        except RestException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            lines.append(f"registered model {model!r} exists")
        for username, path in credentials.items():
            if username not in GRANTS:
                raise ValueError(f"unknown account {username!r}; accounts: {', '.join(GRANTS)}")
            password, made = _account(path, username)
            try:
                auth.create_user(username, password)
                state = "created"
            except RestException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                auth.update_user_password(username, password)  # the file's password holds
                state = "exists"
            permission = GRANTS[username]
            done = [_grant(auth, username, "experiment", experiment_id, permission),
                    _grant(auth, username, "registered_model", model, permission)]  # fmt: skip
            lines.append(
                f"{username}: {state}, password {'made' if made else 'kept'} in {path}; "
                f"{permission} on the experiment ({done[0]}) and {model!r} ({done[1]})"
            )
    return lines
