"""The run's model in MLflow: a logged pyfunc model on raw PaySim rows, registered as a new
version of ``FLAME_MLFLOW_MODEL_NAME``; the alias ``champion`` moves to a new version only when its
server test PR-AUC beats the champion's on the same test set and, for a model with an alert
budget (``FLAME_ALERT_RATE``), its test precision at the budget beats the champion's too (both
at the same budget).

``mlflow.pyfunc.load_model(uri).predict(frame)`` takes PaySim rows (a DataFrame with the PaySim
columns; the label columns are optional and ignored) and returns ``fraud_probability`` and
``is_fraud_predicted`` at the model's stored threshold: the same numbers as ``flame score``, as
the feature transforms and ``model.pt`` travel inside the logged model (with Flame's code).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from flame.data.schema import COLUMNS, LABELS, NAMES
from flame.model.net import ModelCard

log = logging.getLogger("flame.track.registry")
CHAMPION = "champion"
INPUTS = [c for c in COLUMNS if c not in LABELS]
REQUIREMENTS = ("torch", "numpy", "pandas", "pyarrow", "pydantic", "pydantic-settings", "tqdm")


class FraudModel(mlflow.pyfunc.PythonModel):
    """Raw PaySim rows in, fraud probability and decision out (``flame.model.score``)."""

    def load_context(self, context: Any) -> None:
        self.path = Path(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        from flame.model.score import score_frame

        return score_frame(self.path, paysim_frame(model_input))[
            ["fraud_probability", "is_fraud_predicted"]
        ]


def paysim_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s PaySim columns, validated (labels, when absent, as 0: never returned)."""
    from flame.data.loader import validate

    missing = [c for c in INPUTS if c not in frame.columns]
    if missing:
        raise ValueError(f"input rows lack the PaySim column(s) {', '.join(missing)}")
    frame = frame.assign(**{c: 0 for c in LABELS if c not in frame.columns})
    return validate(frame[list(COLUMNS)].reset_index(drop=True), "<request>")


def example_rows() -> pd.DataFrame:
    """A few synthetic rows (never real ones) for the logged model's input example."""
    from flame.data.synth import generate

    frame = generate(200, seed=1, fraud_rate=0.05).head(5)
    return frame[INPUTS].assign(type=frame["type"].astype(str))


def signature() -> Any:
    """PaySim columns in (labels optional), probability and decision out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    def kind(column: str) -> str:
        return "string" if column in ("type", *NAMES) else "long" if column == "step" else "double"

    inputs = [ColSpec(kind(c), c) for c in INPUTS]
    inputs += [ColSpec("long", c, required=False) for c in LABELS]
    outputs = [ColSpec("double", "fraud_probability"), ColSpec("integer", "is_fraud_predicted")]
    return ModelSignature(Schema(inputs), Schema(outputs))


def log_model(
    run_id: str, model_path: Path, card: ModelCard, registered: str | None, tags: dict[str, str]
) -> None:
    """Log ``model_path`` as the run's MLflow model; with ``registered`` (a model name), make
    it a new version and move ``champion`` to it if it beats the current one."""
    import shutil
    import tempfile

    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    import flame

    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.set(True)  # Flame prints the host's link itself
    example = example_rows()
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        code = shutil.copytree(  # Flame's code without byte-code caches
            Path(flame.__file__).parent, Path(tmp) / "flame",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )  # fmt: skip
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=entry(Path(tmp)),
            artifacts={"model": str(model_path)},
            code_paths=[str(code)],
            signature=signature(),
            input_example=example,
            pip_requirements=[f"{p}=={version(p)}" for p in ("mlflow", *REQUIREMENTS)],
            metadata={"card": asdict(card)},
        )
        log.info("MLflow logged model: %s", info.model_uri)
        if registered:
            register(info.model_uri, registered, card, tags)


def register(model_uri: str, name: str, card: ModelCard, tags: dict[str, str]) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    new = mlflow.register_model(model_uri, name)
    tags = tags | scores(card)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    decision = champion_decision(tags, champion)
    if decision.startswith("champion"):
        client.set_registered_model_alias(name, CHAMPION, new.version)
    for key, value in (tags | {"champion_decision": decision}).items():
        client.set_model_version_tag(name, new.version, key, value)
    log.info("Registered %s version %s: %s", name, new.version, decision)


PR_AUC, PRECISION, BUDGET = "server_test_pr_auc", "server_test_precision_at_budget", "alert_rate"


def scores(card: ModelCard) -> dict[str, str]:
    """The figures a version is judged by, as stored in its tags (6 decimals)."""
    out = {
        PR_AUC: f"{card.metrics.get('pr_auc', float('nan')):.6f}",
        BUDGET: f"{card.alert_rate:g}",
    }
    if card.alert_rate:
        out[PRECISION] = f"{card.metrics.get('precision_at_budget', float('nan')):.6f}"
    return out


def champion_decision(new: dict[str, str], champion: Any) -> str:
    """Why the new version (its tags: ``test_set`` and ``scores``) does or does not become the
    champion (one line): it must beat the champion's test PR-AUC and, with an alert budget,
    its precision at the budget, on the same test set at the same budget."""
    pr_auc = float(new[PR_AUC])
    if not np.isfinite(pr_auc):
        return "not champion: its test PR-AUC is undefined (no fraud in the test set?)"
    if champion is None:
        return f"champion: the first version with a test PR-AUC ({pr_auc:.4f})"
    held, version = champion.tags, champion.version
    if held.get("test_set") != new["test_set"]:
        return (
            f"not champion: version {version} was scored on a different test set, "
            "so the two PR-AUCs are not comparable"
        )
    if held.get(BUDGET, "0") != new[BUDGET]:
        return (
            f"not champion: version {version} was chosen for alert budget "
            f"{held.get(BUDGET, '0')}, this one for {new[BUDGET]}: not comparable"
        )
    figures = [("test PR-AUC", PR_AUC)] + ([("precision at the budget", PRECISION)]
                                           if PRECISION in new else [])  # fmt: skip
    for what, key in figures:
        if not beats(new.get(key), held.get(key)):
            return (
                f"not champion: {what} {float(new[key]):.4f} does not beat version "
                f"{version}'s {held.get(key)}"
            )
    both = " and ".join(f"{what} {float(new[key]):.4f}" for what, key in figures)
    return f"champion: {both} beat version {version}'s"


def beats(new: str | None, held: str | None) -> bool:
    """Whether ``new`` is above ``held``, as stored (6 decimals: 1e-16 is no gain)."""
    if new is None or held is None:
        return False
    value = float(new)
    return bool(np.isfinite(value)) and value > float(held)


def entry(folder: Path) -> Path:
    """MLflow's models-from-code script for :class:`FraudModel` (no pickled Python object)."""
    path = folder / "flame_fraud_model.py"
    path.write_text(
        "import mlflow\n\nfrom flame.track.registry import FraudModel\n\n"
        "mlflow.models.set_model(FraudModel())\n"
    )
    return path


def model_file(uri: str, tracking_uri: str) -> Path:
    """The Flame ``model.pt`` inside the MLflow model at ``uri`` (downloaded)."""
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as err:
        from flame.track.access import short

        raise ValueError(f"--model {uri}: {short(err, tracking_uri)}") from None
    flavor = mlflow.models.Model.load(folder).flavors.get("python_function", {})
    artifact = flavor.get("artifacts", {}).get("model", {}).get("path")
    if artifact is None or not (folder / artifact).is_file():
        raise ValueError(f"--model {uri} is not a Flame model (it has no model.pt artifact)")
    return folder / artifact
