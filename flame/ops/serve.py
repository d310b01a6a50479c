"""The scoring service: the registry's champion model over HTTP, on raw PaySim rows.

``POST /predict`` with ``{"rows": [{<PaySim columns>}, ...]}`` (MLflow's ``dataframe_records``
is accepted too; label columns are optional and ignored) answers
``{"model_version": "3", "predictions": [{"fraud_probability": ..., "is_fraud_predicted": 0}]}``.
``GET /health`` answers 200 while the service runs, with the version it serves (null before
the first champion exists). The champion alias is looked up at most every
``FLAME_SERVE_RELOAD`` seconds; when it has moved, the new version is loaded and served.

A bad request (not JSON, no rows, a missing column, a value of the wrong type, more than
``FLAME_SERVE_MAX_ROWS`` rows) gets a 4xx with a one-line reason; 503 until a champion exists.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flame.model.net import FraudMLP, ModelCard

log = logging.getLogger("flame.ops.serve")


class BadRequest(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Champion:
    """The model being served, reloaded when the registry's champion alias moves."""

    tracking_uri: str
    name: str
    reload_every: float
    version: str | None = None
    model: tuple[FraudMLP, ModelCard] | None = None
    checked: float = -1e9
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> tuple[str | None, tuple[FraudMLP, ModelCard] | None]:
        with self.lock:
            if time.monotonic() - self.checked >= self.reload_every:
                self.checked = time.monotonic()
                self._refresh()
            return self.version, self.model

    def _refresh(self) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException

        from flame.model.score import load_scorer
        from flame.track.access import short
        from flame.track.registry import CHAMPION, model_file

        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(self.name, CHAMPION).version
        except MlflowException as err:
            if "error code 401" in str(err) or "error code 403" in str(err):
                log.warning("%s; serving version %s", short(err, self.tracking_uri), self.version)
            return  # no champion yet (or no such model): keep serving what we have
        except Exception as err:  # noqa: BLE001 - registry unreachable: keep the loaded model
            log.warning("registry unreachable (%s); serving version %s", err, self.version)
            return
        if version == self.version:
            return
        try:
            uri = f"models:/{self.name}/{version}"
            self.model = load_scorer(model_file(uri, self.tracking_uri))
        except (ValueError, OSError) as err:
            log.warning("cannot load %s version %s (%s); serving %s", self.name, version, err,
                        self.version)  # fmt: skip
            return
        log.info("Serving %s version %s (%s)", self.name, version, CHAMPION)
        self.version = version


def rows_of(body: Any, max_rows: int) -> list[dict[str, Any]]:
    """The request's rows, or a BadRequest saying in one line what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest(400, 'the body must be a JSON object: {"rows": [{...}, ...]}')
    rows = body.get("rows", body.get("dataframe_records"))
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise BadRequest(400, '"rows" must be a non-empty list of objects (one per transaction)')
    if len(rows) > max_rows:
        raise BadRequest(413, f"{len(rows)} rows; at most {max_rows} per request")
    return rows


def predict(champion: Champion, body: Any, max_rows: int) -> dict[str, Any]:
    import pandas as pd

    from flame.data.loader import PaySimFormatError
    from flame.model.score import score_with
    from flame.track.registry import paysim_frame

    rows = rows_of(body, max_rows)
    version, model = champion.current()
    if model is None:
        raise BadRequest(503, f"no champion yet: no version of {champion.name!r} has the alias")
    try:
        frame = paysim_frame(pd.DataFrame.from_records(rows))
    except (PaySimFormatError, ValueError, TypeError) as err:
        raise BadRequest(400, str(err).splitlines()[0]) from None
    scored = score_with(*model, frame)
    out = scored[["fraud_probability", "is_fraud_predicted"]]
    return {"model_version": version, "predictions": out.to_dict("records")}


def create_app(tracking_uri: str, name: str, reload_every: float, max_rows: int) -> Any:
    app = FastAPI(title="Flame scorer")
    champion = Champion(tracking_uri, name, reload_every)

    @app.get("/health")
    def health() -> dict[str, Any]:
        version, _ = champion.current()
        return {"status": "ok", "model": name, "model_version": version}

    @app.post("/predict")
    async def _predict(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            return JSONResponse(predict(champion, body, max_rows))
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)

    return app


def serve(
    tracking_uri: str, name: str, host: str, port: int, reload_every: float, max_rows: int
) -> None:
    import uvicorn

    log.info("Scoring %s@champion from %s on http://%s:%d", name, tracking_uri, host, port)
    app = create_app(tracking_uri, name, reload_every, max_rows)
    uvicorn.run(app, host=host, port=port, log_level="warning")
