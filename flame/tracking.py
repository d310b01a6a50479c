"""Run tracking: CSV, TensorBoard and MLflow, each switched by a setting.

A failing sink never stops training: it logs one warning and switches itself off. The CSV is
written row by row (flushed), so it holds every finished round even if the run dies.
"""

from __future__ import annotations

import csv
import logging
import math
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flame.settings import FlameSettings

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "time", "kind", "round", "stage", "threshold", "num_examples", "loss", "precision",
    "recall", "f1", "roc_auc", "pr_auc", "accuracy", "tp", "fp", "fn", "tn", "epsilon",
    "bytes_sent", "bytes_received",
]  # fmt: skip
SERVER, CLIENTS = "server", "client_aggregate"


def client_kind(region: str) -> str:
    return f"client:{region}"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if k in CSV_COLUMNS[4:] and isinstance(v, int | float) and not math.isnan(v)
    }


class CsvSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("w", newline="")  # a new run never mixes with an old one
        self._writer = csv.DictWriter(self._file, CSV_COLUMNS, extrasaction="ignore")
        self._writer.writeheader()

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        row = {"time": f"{time.time():.3f}", "kind": kind, "round": rnd, "stage": stage}
        self._writer.writerow(row | _scalars(metrics))
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


class MlflowSink:
    """One MLflow run per federated run; metrics at step=round."""

    def __init__(self, settings: FlameSettings, run_name: str, params: Mapping[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(settings.mlflow_tracking_uri)
        experiment = self.client.get_experiment_by_name(settings.mlflow_experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(settings.mlflow_experiment)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.client.log_batch(self.run_id, params=_params(params))
        self.url = (
            f"{settings.mlflow_tracking_uri}/#/experiments/{experiment_id}/runs/{self.run_id}"
        )

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        prefix = kind.replace(":", "_") + ("" if stage == "evaluate" else f"_{stage}")
        batch = [Metric(f"{prefix}/{k}", v, now, rnd) for k, v in _scalars(metrics).items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _params(params: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:500]) for k, v in params.items()]


class Tracker:
    """Fans every record out to the enabled sinks; a sink that fails is switched off."""

    def __init__(self, settings: FlameSettings, folder: Path, params: Mapping[str, Any]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.sinks: dict[str, Any] = {}
        self._open("csv", settings.csv, lambda: CsvSink(folder / "metrics.csv"))
        self._open("tensorboard", settings.tensorboard, lambda: TensorBoardSink(folder))
        if settings.mlflow and not mlflow_reachable(settings.mlflow_tracking_uri):
            log.warning(
                "MLflow at %s is unreachable; continuing without MLflow "
                "(start one with scripts/start_mlflow_ui.py or set FLAME_MLFLOW=false)",
                settings.mlflow_tracking_uri,
            )
        else:
            self._open("mlflow", settings.mlflow, lambda: MlflowSink(settings, folder.name, params))
        if "mlflow" in self.sinks:
            log.info("MLflow run: %s", self.sinks["mlflow"].url)

    def _open(self, name: str, enabled: bool, factory: Any) -> None:
        if not enabled:
            return
        try:
            self.sinks[name] = factory()
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            log.warning("%s tracking disabled: %s", name, err)

    def _each(self, method: str, *args: Any) -> None:
        for name, sink in list(self.sinks.items()):
            if hasattr(sink, method):
                try:
                    getattr(sink, method)(*args)
                except Exception as err:  # noqa: BLE001
                    log.warning("%s tracking disabled after an error: %s", name, err)
                    self.sinks.pop(name)

    def log(self, kind: str, rnd: int, stage: str, metrics: Mapping[str, Any]) -> None:
        self._each("log", kind, rnd, stage, metrics)

    def artifacts(self, paths: list[Path]) -> None:
        self._each("artifacts", paths)

    def close(self) -> None:
        self._each("close")
