"""This process's MLflow login (FLAME_MLFLOW_CREDENTIALS) and one-line reasons when MLflow
refuses it.

The credentials file is MLflow's own format (``~/.mlflow/credentials``)::

    [mlflow]
    mlflow_tracking_username = flame-writer
    mlflow_tracking_password = ...

It is read once, at the process boundary (``flame`` commands, the ServerApp's main), and handed
to MLflow as ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` in this process's
environment, which every MLflow client call reads. The password is never logged or printed.
"""

from __future__ import annotations

import base64
import configparser
import functools
import os
import urllib.error
import urllib.request
from pathlib import Path

from flame.settings import SettingsError, TrackingSettings

SECTION, USER_KEY, PASSWORD_KEY = "mlflow", "mlflow_tracking_username", "mlflow_tracking_password"
USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
SETTING = "FLAME_MLFLOW_CREDENTIALS"


class MlflowAccessError(RuntimeError):
    """MLflow refused this process's login or an operation on it (401/403), in one line."""


def write_secret(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only (atomic: never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def write_credentials(path: Path, username: str, password: str) -> None:
    """``path`` in MLflow's credentials format, readable by its owner only."""
    write_secret(path, f"[{SECTION}]\n{USER_KEY} = {username}\n{PASSWORD_KEY} = {password}\n")


def read_credentials(path: Path, setting: str = SETTING) -> tuple[str, str]:
    """(username, password) from a credentials file; a one-line SettingsError naming
    ``setting`` if it is missing or malformed."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text())
    except OSError as err:
        raise SettingsError(f"{setting}={path}: cannot read it ({err.strerror})") from None
    except (configparser.Error, UnicodeDecodeError):
        raise SettingsError(f"{setting}={path}: not an MLflow credentials file") from None
    section = parser[SECTION] if parser.has_section(SECTION) else {}
    username, password = section.get(USER_KEY, ""), section.get(PASSWORD_KEY, "")
    if not username or not password:
        raise SettingsError(f"{setting}={path}: needs [{SECTION}] {USER_KEY} and {PASSWORD_KEY}")
    return username, password


_read_once = functools.cache(read_credentials)


def login(settings: TrackingSettings) -> str | None:
    """Hand FLAME_MLFLOW_CREDENTIALS (read once per process) to MLflow; the username, or None
    when the setting is unset (an unauthenticated server, or MLflow's own variables)."""
    if settings.mlflow_credentials is None:
        return None
    username, password = _read_once(settings.mlflow_credentials)
    os.environ[USER_ENV], os.environ[PASSWORD_ENV] = username, password
    return username


def _who() -> str:
    user = os.environ.get(USER_ENV)
    return f"the account {user!r}" if user else "no account"


def refused(status: int, uri: str, what: str = "") -> str:
    """The one-line reason for a 401/403 from the MLflow at ``uri``."""
    if status == 401:
        fix = (
            f"check {SETTING} (this service's credentials file)"
            if os.environ.get(USER_ENV)
            else f"set {SETTING} to this service's credentials file"
        )
        return f"MLflow at {uri} refused the login of {_who()} (401 not authenticated): {fix}"
    return f"MLflow at {uri} refused {what or 'the request'} to {_who()} (403 permission denied)"


def check_access(uri: str) -> None:
    """Raise MlflowAccessError (one line) if the MLflow at ``uri`` refuses this process's login.
    Nothing to check for a local store; an unreachable server is the caller's concern."""
    if not uri.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
                                     "?max_results=1")  # fmt: skip
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise MlflowAccessError(refused(err.code, uri, "searching experiments")) from None
    except OSError:
        return


def short(err: BaseException, uri: str = "") -> str:
    """An MLflow error in one line: a 401/403 as :func:`refused` says it, else its first line."""
    text = str(getattr(err, "message", "") or err)
    for status in (401, 403):
        if f"error code {status}" in text:
            _, found, rest = text.partition("endpoint ")
            endpoint = rest.split(" ", 1)[0] if found else ""
            return refused(status, uri or "the tracking URI", endpoint)
    return text.splitlines()[0] if text else type(err).__name__
