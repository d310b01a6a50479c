"""A region's scoring service: the registry's champion model over HTTP, on the region's raw
PaySim rows, with the history features kept in the region's own store.

The scorer runs in the region, beside its data: only the champion's weights and card come from
the coordinator's registry; no row leaves. Every row it scores is remembered in the region's
history store (``flame.ops.history_store``: Redis, or SQLite in ``FLAME_STATE_DIR``), so
transactions sent one per request, in step order, get the probabilities ``flame score`` gives
the whole file. ``GET /metrics`` is Prometheus text: requests, latency, rows, alerts, scores,
and ``flame_scorer_score_psi``, the population stability index of the last ``DRIFT_WINDOW``
scores against the champion's validation scores (``flame.ops.monitor``).

``POST /predict`` with ``{"rows": [{<PaySim columns>}, ...]}`` (MLflow's ``dataframe_records``
is accepted too; label columns are optional and ignored) answers
``{"model_version": "3", "predictions": [{"fraud_probability": ..., "is_fraud_predicted": 0}]}``.
``GET /health`` answers 200 while the service runs, with the version it serves (null before
the first champion exists), without waiting on the registry. ``/predict`` looks the champion
alias up at most every ``FLAME_SERVE_RELOAD`` seconds; when it has moved, the new version is
loaded and served.

A bad request (not strict JSON, so NaN and Infinity too; JSON nested deeper than a row; no
rows; a missing column; a value of the wrong type; more than ``FLAME_SERVE_MAX_ROWS`` rows) gets
a 4xx with a one-line reason; 503 until a champion exists, or while the history store does not
answer (``/health`` then says ``"degraded"``). A body larger than
``max_body_bytes(FLAME_SERVE_MAX_ROWS)`` (1 KiB a row: a PaySim row is about 250 bytes of JSON)
gets 413 before more of it than that is read.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flame.data.history import History, HistoryStore
from flame.model.net import FraudMLP, ModelCard
from flame.model.score import Forward
from flame.ops.monitor import Monitor
from flame.track.tracking import bound_requests

log = logging.getLogger("flame.ops.serve")


ROW_BYTES = 1024  # the body cap per allowed row; a PaySim row is ~250 bytes of JSON
SCALARS = {str, int, float, bool, type(None)}  # what a JSON row's value may be


def max_body_bytes(max_rows: int) -> int:
    """The largest request body the scorer reads: ``max_rows`` generous rows."""
    return max_rows * ROW_BYTES + 1024


class BadRequest(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Served:
    """One champion version, ready to score: its weights, card and numpy forward pass."""

    version: str
    model: FraudMLP
    card: ModelCard
    forward: Forward


@dataclass
class Champion:
    """The model being served, reloaded when the registry's champion alias moves."""

    tracking_uri: str
    name: str
    reload_every: float
    served: Served | None = None  # replaced whole, so a request never mixes two versions
    checked: float = -1e9
    problem: str = ""  # why the last look at the registry failed; empty when it answered
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def version(self) -> str | None:
        return self.served.version if self.served else None

    def current(self) -> tuple[str | None, tuple[FraudMLP, ModelCard] | None]:
        served = self.serving()
        return (served.version, (served.model, served.card)) if served else (None, None)

    def serving(self) -> Served | None:
        """The model to score with: once one is loaded, never waiting on the registry (a look,
        when due, runs in the background); before that, one bounded look."""
        if self.served is not None:
            self.peek()
            return self.served
        with self.lock:
            if self.served is None and time.monotonic() - self.checked >= self.reload_every:
                self.checked = time.monotonic()
                self._refresh()
            return self.served

    def peek(self) -> str | None:
        """The version served now, never waiting: a look at the alias, when one is due, starts
        in the background."""
        due = time.monotonic() - self.checked >= self.reload_every
        if due and self.lock.acquire(blocking=False):
            threading.Thread(target=self._refresh_and_release, daemon=True).start()
        return self.version

    def _refresh_and_release(self) -> None:
        try:
            self.checked = time.monotonic()
            self._refresh()
        finally:
            self.lock.release()

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
            self.problem = ""
            if "failed with exception" in str(err):  # no HTTP answer: refused, timed out
                self.problem = f"MLflow at {self.tracking_uri} unreachable"
                log.warning("%s; serving version %s", self.problem, self.version)
            elif "error code 401" in str(err) or "error code 403" in str(err):
                self.problem = short(err, self.tracking_uri)
                log.warning("%s; serving version %s", self.problem, self.version)
            return  # no champion yet (or no such model): keep serving what we have
        except Exception as err:  # noqa: BLE001 - registry unreachable: keep the loaded model
            self.problem = f"MLflow at {self.tracking_uri} unreachable ({type(err).__name__})"
            log.warning("%s; serving version %s", self.problem, self.version)
            return
        self.problem = ""
        if version == self.version:
            return
        try:
            uri = f"models:/{self.name}/{version}"
            model, card = load_scorer(model_file(uri, self.tracking_uri))
            served = Served(version, model, card, Forward(model))
        except (ValueError, OSError, TypeError) as err:
            log.warning("cannot load %s version %s (%s); serving %s", self.name, version, err,
                        self.version)  # fmt: skip
            return
        log.info("Serving %s version %s (%s)", self.name, version, CHAMPION)
        self.served = served


@dataclass
class StoreWatch:
    """The history store's health as last seen, never waited on: a check, when due, runs in
    the background; a failed or successful exchange updates it at once."""

    store: HistoryStore
    every: float = 5.0
    problem: str = ""
    checked: float = -1e9
    lock: threading.Lock = field(default_factory=threading.Lock)

    def peek(self) -> str:
        if time.monotonic() - self.checked >= self.every and self.lock.acquire(blocking=False):
            self.checked = time.monotonic()
            threading.Thread(target=self._check, daemon=True).start()
        return self.problem

    def _check(self) -> None:
        try:
            self.problem = self.store.problem()
        finally:
            self.lock.release()


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


def scalars(column: str, values: list[Any]) -> np.ndarray:
    """``values`` as an object array, or a 400 naming the first row whose value is not a
    number, a string or null."""
    if not set(map(type, values)) <= SCALARS:
        number = next(i for i, v in enumerate(values) if type(v) not in SCALARS)
        raise BadRequest(400, f"row {number}: {column!r} must be a number or a string, not "
                         f"{type(values[number]).__name__}")  # fmt: skip
    return np.array(values, dtype=object)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, or a 413 BadRequest once it is longer than ``limit`` bytes (before
    any of it is read when the client declares its length)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is {int(declared)} bytes; at most {limit} per request")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"the body is over {limit} bytes; at most {limit} per request")
    return bytes(body)


def parse(body: bytes) -> Any:
    """The body as strict JSON (no NaN or Infinity), or a 400 BadRequest in one line."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        if "depth limit" in str(err):
            raise BadRequest(400, "the body is JSON nested too deeply") from None
        raise BadRequest(400, f"the body is not JSON ({err})") from None


def columns_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The request's rows as checked PaySim columns (labels, when absent, as 0: never used)."""
    from flame.data.loader import check_columns
    from flame.data.schema import COLUMNS, LABELS
    from flame.track.registry import INPUTS

    columns = {
        c: scalars(c, [row.get(c, 0 if c in LABELS else None) for row in rows]) for c in COLUMNS
    }
    missing = [c for c in INPUTS if not any(c in row for row in rows)]
    if missing:
        raise BadRequest(400, f"input rows lack the PaySim column(s) {', '.join(missing)}")
    return check_columns(columns, "<request>")


def predict(
    champion: Champion,
    history: History,
    monitor: Monitor,
    watch: StoreWatch,
    body: Any,
    max_rows: int,
) -> dict[str, Any]:
    from flame.data.history import StepOrderError
    from flame.data.loader import PaySimFormatError
    from flame.model.score import probabilities
    from flame.ops.history_store import HistoryUnavailable

    try:
        columns = columns_of(rows_of(body, max_rows))
    except BadRequest:
        raise
    except (PaySimFormatError, ValueError, TypeError) as err:
        raise BadRequest(400, str(err).splitlines()[0]) from None
    served = champion.serving()
    if served is None:
        raise BadRequest(503, f"no champion yet: no version of {champion.name!r} has the alias")
    try:
        scores = probabilities(served.model, served.card, columns, history, served.forward)
    except HistoryUnavailable as err:
        watch.problem = str(err).splitlines()[0]
        raise BadRequest(503, watch.problem) from None
    except StepOrderError as err:
        raise BadRequest(409, str(err)) from None
    watch.problem = ""
    monitor.scored(scores, served.card, served.version)
    flagged = (scores >= served.card.threshold).tolist()
    predictions = [
        {"fraud_probability": p, "is_fraud_predicted": int(f)}
        for p, f in zip(scores.tolist(), flagged, strict=True)
    ]
    return {"model_version": served.version, "predictions": predictions}


def json_reply(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


def create_app(
    tracking_uri: str, name: str, reload_every: float, max_rows: int, store: HistoryStore
) -> Starlette:
    from prometheus_client import CONTENT_TYPE_LATEST

    bound_requests()  # MLflow's own retries hold a look at a dead registry for minutes
    champion = Champion(tracking_uri, name, reload_every)
    history, monitor, watch = History(store), Monitor(), StoreWatch(store)
    limit = max_body_bytes(max_rows)

    async def health(request: Request) -> Response:
        version = champion.peek()  # never waits on the registry (a healthcheck must answer)
        stored, problem = watch.peek(), champion.problem  # nor on the history store
        return json_reply({"status": "degraded" if problem or stored else "ok",
                           "registry": problem or "ok", "model": name, "model_version": version,
                           "history": stored or store.describe()})  # fmt: skip

    async def metrics(request: Request) -> Response:
        return Response(monitor.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def predict_route(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = parse(await read_body(request, limit))
            answer = (
                predict(champion, history, monitor, watch, body, max_rows)
                if champion.served is not None and not watch.problem  # the usual path
                else await run_in_threadpool(
                    predict, champion, history, monitor, watch, body, max_rows
                )
            )  # the first look at the registry, or a store that times out, must not block /health
            reply = json_reply(answer)
        except BadRequest as err:
            reply = json_reply({"error": str(err)}, err.status)
        monitor.request(reply.status_code, time.perf_counter() - started)
        return reply

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/predict", predict_route, methods=["POST"]),
    ])  # fmt: skip


def serve(
    tracking_uri: str,
    name: str,
    host: str,
    port: int,
    reload_every: float,
    max_rows: int,
    store: HistoryStore,
) -> None:
    import torch
    import uvicorn

    torch.set_num_threads(1)  # small batches: a second thread only contends with the server
    log.info("Scoring %s@champion from %s on http://%s:%d, history in %s", name, tracking_uri,
             host, port, store.describe())  # fmt: skip
    app = create_app(tracking_uri, name, reload_every, max_rows, store)
    # SIGTERM: requests still running after 5 s are dropped, so a stop is prompt
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
