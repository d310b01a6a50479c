"""The scoring service against a real MLflow registry: champion served, reloaded, bad input 4xx."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from flame.data.synth import generate
from flame.model.net import build_model, new_card, save_model
from flame.model.score import score_frame
from flame.ops.serve import create_app
from flame.track import registry


def _register(folder: Path, client: mlflow.MlflowClient, experiment: str, seed: int) -> Path:
    card = new_card(False, [8], 0.3)
    card.metrics = {"pr_auc": 0.5 + seed / 10}
    path = folder / f"model{seed}.pt"
    save_model(path, build_model(card, seed=seed), card)
    run_id = client.create_run(experiment).info.run_id
    registry.log_model(run_id, path, card, "flame-fraud", {"test_set": "t"})
    return path


def test_scorer_serves_the_champion_reloads_it_and_refuses_bad_requests(
    tmp_path: Path, mlflow_server: str
) -> None:
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("serve-test")
    app = TestClient(create_app(mlflow_server, "flame-fraud", reload_every=0.0, max_rows=50))
    assert app.get("/health").json()["model_version"] is None
    frame = generate(40, seed=3, fraud_rate=0.1)
    rows = frame.assign(type=frame["type"].astype(str)).to_dict("records")
    waiting = app.post("/predict", json={"rows": rows})
    assert waiting.status_code == 503 and "no champion" in waiting.json()["error"]

    first = _register(tmp_path, client, experiment, 1)
    reply = app.post("/predict", json={"rows": rows})
    assert reply.status_code == 200 and reply.json()["model_version"] == "1"
    got = [p["fraud_probability"] for p in reply.json()["predictions"]]
    assert got == pytest.approx(score_frame(first, frame)["fraud_probability"].tolist())

    _register(tmp_path, client, experiment, 2)  # better PR-AUC: the alias moves
    assert app.post("/predict", json={"dataframe_records": rows}).json()["model_version"] == "2"
    assert app.get("/health").json()["model_version"] == "2"

    without_step = {k: v for k, v in rows[0].items() if k != "step"}
    bad = {
        "not json": (b"{rows", 400, "not JSON"),
        "no rows": ({"rows": []}, 400, "non-empty list"),
        "missing column": ({"rows": [without_step]}, 400, "step"),
        "wrong type": ({"rows": [rows[0] | {"amount": "lots"}]}, 400, ""),
        "negative": ({"rows": [rows[0] | {"amount": -5.0}]}, 400, "amount"),
        "unknown type": ({"rows": [rows[0] | {"type": "GIFT"}]}, 400, "type"),
        "too many": ({"rows": rows * 2}, 413, "at most 50"),
    }
    for name, (body, status, text) in bad.items():
        sent = (
            app.post("/predict", content=body)
            if isinstance(body, bytes)
            else app.post("/predict", json=body)
        )
        assert sent.status_code == status, (name, sent.text)
        assert text in sent.json()["error"] and "\n" not in sent.json()["error"], name
