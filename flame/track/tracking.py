"""Run tracking: CSV, TensorBoard and MLflow, each switched by a setting.

A failing sink never stops training: it logs one warning and switches itself off. The CSV is
written row by row (flushed), so it holds every finished round even if the run dies. MLflow
being unreachable is not a failure: it is synced from the CSV when it answers (see MlflowSink).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flame.model.metrics import ALERT_FIGURES
from flame.settings import TrackingSettings
from flame.track.access import check_access, short

if TYPE_CHECKING:
    from flame.model.net import ModelCard

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "time", "kind", "round", "stage", "threshold", "num_examples", "loss", "precision",
    "recall", "f1", "roc_auc", "pr_auc", "accuracy", "tp", "fp", "fn", "tn", *ALERT_FIGURES,
    "epsilon", "bytes_sent", "bytes_received", "regions", "missing",
]  # fmt: skip
NUMERIC = CSV_COLUMNS[4:-1]  # "missing" is text
SERVER, CLIENTS = "server", "client_aggregate"
SELECTED = "selected"  # the saved model (best round by validation) on the server test set


def client_kind(region: str) -> str:
    return f"client:{region}"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if k in NUMERIC and isinstance(v, int | float) and not math.isnan(v)
    }


class CsvSink:
    """metrics.csv, one flushed row per record. A new run starts a fresh file; a resumed run
    keeps the rows up to its checkpointed round (dropping a half-finished round: its training
    rows after ``resume_after``, its evaluation rows after ``evaluated_through``) and appends."""

    def __init__(
        self, path: Path, resume_after: int | None = None, evaluated_through: int | None = None
    ) -> None:
        self.path = path
        kept: list[dict[str, str]] = []
        if resume_after is not None and path.exists():
            evaluated = resume_after if evaluated_through is None else evaluated_through
            last = {"train": resume_after, "evaluate": min(resume_after, evaluated)}
            with path.open(newline="") as old:
                kept = [
                    r
                    for r in csv.DictReader(old)
                    if int(r["round"]) <= last.get(r["stage"], resume_after)
                ]
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, CSV_COLUMNS, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        row = {"time": f"{time.time():.3f}", "kind": kind, "round": rnd, "stage": stage}
        text = {k: metrics[k] for k in ("missing",) if metrics.get(k)}
        self._writer.writerow(row | _scalars(metrics) | text)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(folder / "tensorboard"))

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        for name, value in _scalars(metrics).items():
            self._writer.add_scalar(f"{kind.replace(':', '_')}/{stage}/{name}", value, rnd)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def mlflow_reachable(uri: str, timeout: float = 3.0) -> bool:
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
            return reply.status == 200
    except OSError:
        return False


def bound_requests(retries: int = 1, timeout: int = 10) -> None:
    """Cap MLflow's HTTP retries and time-out for this process (MLflow's own: 7 retries with
    back-off and 120 s each, so a dead server holds a command for minutes)."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    MLFLOW_HTTP_REQUEST_MAX_RETRIES.set(retries)
    MLFLOW_HTTP_REQUEST_TIMEOUT.set(timeout)


def require_server(uri: str, what: str) -> None:
    """A ConnectionError in one line, naming the address and the setting, when the MLflow
    server at ``uri`` does not answer (local stores always do)."""
    if not mlflow_reachable(uri):
        raise ConnectionError(
            f"{what}: MLflow at {uri} does not answer; start it or fix FLAME_MLFLOW_TRACKING_URI"
        )


LOCAL_SERVER = "http://127.0.0.1:5000"
EMBEDDED = Path("mlflow-data")  # the store scripts/start_mlflow_ui.py (make mlflow-ui) serves
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # the UI's training view


def test_set_digest(x: np.ndarray, y: np.ndarray, shared_features: int) -> str:
    """Content digest of the server test set (labels and the features every model variant has),
    so two runs' test PR-AUCs are compared only when they scored the same rows."""
    digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    digest.update(np.ascontiguousarray(x[:, :shared_features]).tobytes())
    return digest.hexdigest()[:16]


def tracking_uri(setting: str) -> str:
    """FLAME_MLFLOW_TRACKING_URI; unset: the local server if it answers, else the embedded
    SQLite store in ./mlflow-data (no server needed; make mlflow-ui shows it)."""
    if setting:
        return setting
    if mlflow_reachable(LOCAL_SERVER, timeout=1.0):
        return LOCAL_SERVER
    EMBEDDED.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(EMBEDDED / 'mlflow.db').resolve()}"


def public_url(uri: str, public: str) -> str:
    """Where a person opens the UI: FLAME_MLFLOW_PUBLIC_URL, else an http tracking URI, else
    the UI of make mlflow-ui (embedded store)."""
    return (public or (uri if uri.startswith("http") else LOCAL_SERVER)).rstrip("/")


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id; created if missing (in the embedded store with its artifacts
    beside the database), and marked as model training so the UI opens that view."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or experiment.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    return str(experiment_id)


class MlflowSink:
    """One MLflow run per federated run; metrics at step=round, synced from ``metrics.csv``.

    The CSV is the run's journal: at the end of every round (``commit``) the sink delivers every
    CSV value its MLflow run lacks. So MLflow being down never blocks or stops training (the
    values wait in the CSV), a round cut short by a crash never reaches MLflow, and a resumed
    run delivers what the killed one had checkpointed but not yet sent. The run is created on
    first contact and its id kept in ``mlflow_run.json`` in the run folder, which ``flame
    mlflow-backfill <run folder>`` uses to deliver the same way after the run.
    """

    def __init__(
        self, settings: TrackingSettings, folder: Path, params: Mapping[str, Any], uri: str
    ) -> None:
        self.settings, self.folder, self.params = settings, folder, dict(params)
        self.uri = uri
        self.run_id: str | None = None
        self.url = ""
        self.delivered: set[tuple[str, int]] = set()
        self._connect()

    def _connect(self) -> bool:
        if self.run_id is not None:
            return True
        if not mlflow_reachable(self.uri):
            return False
        from mlflow.tracking import MlflowClient

        check_access(self.uri)  # a refused login: one line, and this sink switches off
        self.client = MlflowClient(self.uri)
        self.run_id, experiment_id, created = open_run(
            self.client, self.settings.mlflow_experiment, self.uri, self.folder
        )
        if created:  # a resumed run keeps the parameters it started with
            self.client.log_batch(self.run_id, params=_params(self.params))
        else:
            self.delivered = delivered(self.client, self.run_id)
        base = public_url(self.uri, self.settings.mlflow_public_url)
        # the UI opens in its GenAI view unless told otherwise (MLflow 3.x; checked in Chromium)
        view = "workflowType=machine_learning"
        self.url = f"{base}/#/experiments/{experiment_id}/runs/{self.run_id}?{view}"
        viewer = " (open it with make mlflow-ui)" if self.uri.startswith("sqlite:") else ""
        log.info("MLflow run%s: %s", viewer, self.url)
        return True

    def dataset(self, name: str, rows: int, frauds: int, digest: str) -> None:
        """Record a data set the run used, as an MLflow dataset input: its size, fraud count
        and content digest, never its rows."""
        if not self._connect() or self.run_id is None:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = json.dumps({"num_rows": rows, "num_frauds": frauds})
        source = json.dumps({"holder": name, "rows_shared": False})
        dataset = Dataset(name, digest, "flame", source, profile=profile)
        tag = InputTag("mlflow.data.context", "evaluation" if name == "server-test" else "training")
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, [tag])])

    def commit(self) -> None:
        """End of a round (checkpointed): deliver it."""
        self.sync()

    def sync(self) -> bool:
        """Deliver the CSV values MLflow lacks, if it answers; True when nothing is left."""
        if not self._connect() or not mlflow_reachable(self.uri, timeout=1.0):
            log.warning("MLflow unreachable: rounds wait in metrics.csv until it answers")
            return False
        assert self.run_id is not None
        try:
            deliver(self.client, self.run_id, self.folder / "metrics.csv", self.delivered)
        except Exception as err:  # noqa: BLE001 - went down mid-delivery: the CSV keeps them
            log.warning("MLflow delivery failed (%s); the rest waits in metrics.csv",
                        short(err, self.uri))  # fmt: skip
            return False
        return True

    def artifacts(self, paths: list[Path]) -> None:
        if self.sync() and self.run_id is not None:
            for path in paths:
                self.client.log_artifact(self.run_id, str(path))

    def model(self, path: Path, card: ModelCard, tags: dict[str, str]) -> None:
        """Log the run's model as an MLflow model (and register it, FLAME_REGISTER)."""
        if not self.sync() or self.run_id is None:
            log.warning("MLflow unreachable: the model in %s was not logged to MLflow", path)
            return
        import mlflow

        from flame.track.registry import log_model

        mlflow.set_tracking_uri(self.uri)
        settings = self.settings
        registered = settings.mlflow_model_name if settings.mlflow_register else None
        log_model(self.run_id, path, card, registered, tags)

    def close(self, status: str = "FINISHED") -> None:
        if not self.sync():
            log.warning(
                "MLflow was unreachable to the end: the run's metrics are in %s; deliver them "
                "with `flame mlflow-backfill %s`",
                self.folder / "metrics.csv", self.folder,
            )  # fmt: skip
            return
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)


def metric_prefix(kind: str, stage: str) -> str:
    return kind.replace(":", "_") + ("" if stage == "evaluate" else f"_{stage}")


def open_run(client: Any, experiment: str, uri: str, folder: Path) -> tuple[str, str, bool]:
    """The run folder's MLflow run (from ``mlflow_run.json``), created on first use.
    Returns (run id, experiment id, whether it was created now)."""
    record = folder / "mlflow_run.json"
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("tracking_uri") == uri:
            return saved["run_id"], saved["experiment_id"], False
    experiment_id = ensure_experiment(client, experiment, uri)
    run_id = client.create_run(experiment_id, run_name=folder.name).info.run_id
    saved = {"run_id": run_id, "experiment_id": experiment_id}
    record.write_text(json.dumps(saved | {"tracking_uri": uri}))
    return run_id, experiment_id, True


def delivered(client: Any, run_id: str) -> set[tuple[str, int]]:
    """(metric key, step) pairs the MLflow run already holds."""
    keys = client.get_run(run_id).data.metrics
    return {(k, m.step) for k in keys for m in client.get_metric_history(run_id, k)}


def deliver(client: Any, run_id: str, csv_path: Path, sent: set[tuple[str, int]]) -> int:
    """Log every value of ``csv_path`` not in ``sent`` (updated in place, batch by batch, once
    MLflow took it); returns how many."""
    from mlflow.entities import Metric

    if not csv_path.exists():
        return 0
    missing: dict[tuple[str, int], Metric] = {}
    with csv_path.open(newline="") as rows:
        for row in csv.DictReader(rows):
            prefix, rnd = metric_prefix(row["kind"], row["stage"]), int(row["round"])
            values = {k: float(v) for k, v in row.items() if k in NUMERIC and v}
            for key, value in _scalars(values).items():
                if (name := f"{prefix}/{key}", rnd) not in sent:
                    stamp = int(float(row["time"]) * 1000)
                    missing.setdefault((name, rnd), Metric(name, value, stamp, rnd))
    batch = list(missing.values())
    for start in range(0, len(batch), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=batch[start : start + 1000])
        sent.update((m.key, m.step) for m in batch[start : start + 1000])
    return len(batch)


def backfill(settings: TrackingSettings, folder: Path) -> int:
    """Log every metrics.csv value MLflow lacks into the folder's run; returns values sent."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(settings.mlflow_tracking_uri)
    if not mlflow_reachable(uri):
        raise ConnectionError(f"MLflow at {uri} is unreachable")
    check_access(uri)
    client = MlflowClient(uri)
    run_id, _, created = open_run(client, settings.mlflow_experiment, uri, folder)
    sent = set() if created else delivered(client, run_id)
    return deliver(client, run_id, folder / "metrics.csv", sent)


def _params(params: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:500]) for k, v in params.items()]


class Tracker:
    """Fans every record out to the enabled sinks; a sink that fails is switched off."""

    def __init__(
        self,
        settings: TrackingSettings,
        folder: Path,
        params: Mapping[str, Any],
        resume_after: int | None = None,
        evaluated_through: int | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.sinks: dict[str, Any] = {}
        csv_path = folder / "metrics.csv"
        # MLflow is synced from the CSV, so it is written whenever either is on
        self._open(
            "csv",
            settings.csv or settings.mlflow,
            lambda: CsvSink(csv_path, resume_after, evaluated_through),
        )
        self._open("tensorboard", settings.tensorboard, lambda: TensorBoardSink(folder))
        uri = tracking_uri(settings.mlflow_tracking_uri) if settings.mlflow else ""
        if settings.mlflow and not mlflow_reachable(uri):
            log.warning(
                "MLflow at %s is unreachable; metrics wait in the CSV and are delivered when it "
                "answers (start one with scripts/start_mlflow_ui.py or set FLAME_MLFLOW=false)",
                uri,
            )
        self._open("mlflow", settings.mlflow, lambda: MlflowSink(settings, folder, params, uri))

    def _open(self, name: str, enabled: bool, factory: Any) -> None:
        if not enabled:
            return
        try:
            self.sinks[name] = factory()
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            log.warning("%s tracking disabled: %s", name, short(err))

    def _each(self, method: str, *args: Any) -> None:
        for name, sink in list(self.sinks.items()):
            if hasattr(sink, method):
                try:
                    getattr(sink, method)(*args)
                except Exception as err:  # noqa: BLE001
                    log.warning("%s tracking disabled after an error: %s", name, short(err))
                    self.sinks.pop(name)

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        self._each("log", kind, rnd, stage, metrics)

    def commit(self) -> None:
        """A round is complete (and checkpointed): sinks that batch may deliver it."""
        self._each("commit")

    def close_csv(self) -> Path | None:
        """Close metrics.csv (no more rows) and return it, if it is written."""
        sink = self.sinks.get("csv")
        if sink is None:
            return None
        self.sinks.pop("csv").close()
        return sink.path  # type: ignore[no-any-return]

    def artifacts(self, paths: list[Path]) -> None:
        self._each("artifacts", paths)

    def model(self, path: Path, card: ModelCard, tags: dict[str, str]) -> None:
        self._each("model", path, card, tags)

    def dataset(self, name: str, rows: int, frauds: int, digest: str) -> None:
        self._each("dataset", name, rows, frauds, digest)

    def close(self, status: str = "FINISHED") -> None:
        for name, sink in list(self.sinks.items()):
            try:
                if name == "mlflow":
                    sink.close(status)
                else:
                    sink.close()
            except Exception as err:  # noqa: BLE001 - a failing sink must not end the run
                log.warning("tracking: %s sink failed to close (%s)", name, err)
