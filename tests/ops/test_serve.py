"""The scoring service against a real MLflow registry: champion served, reloaded, bad input 4xx;
its limits on a real HTTP server: body size cap (413), malformed or nested JSON (400); and a
region's scorer processes with their history in a real Redis, fed one transaction per request,
matching ``flame score`` on the whole file through a restart."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from flame.data.history import MemoryStore
from flame.data.synth import generate
from flame.model.net import build_model, new_card, save_model
from flame.model.score import load_scorer, score_frame, score_with
from flame.ops.history_store import SQLiteStore
from flame.ops.local_deployment import free_port, wait_healthy
from flame.ops.serve import create_app, max_body_bytes
from flame.track import registry
from tests.conftest import RedisServer


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
    store = SQLiteStore(tmp_path / "history.sqlite3", 3600)  # takes late rows, as Redis does
    app = TestClient(create_app(mlflow_server, "flame-fraud", 0.0, 50, store))
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
    # a request never waits on the registry once a model is served: the new version is
    # looked up and loaded in the background, and served from then on
    served, deadline = "1", time.monotonic() + 30
    while served == "1" and time.monotonic() < deadline:
        time.sleep(0.2)
        served = app.post("/predict", json={"dataframe_records": rows}).json()["model_version"]
    assert served == "2"
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


@pytest.fixture
def scorer() -> Iterator[tuple[str, int]]:
    """``flame serve``'s app in a real uvicorn server on a free port (no registry behind it:
    every request below is refused before the champion is looked up)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app("http://127.0.0.1:9", "flame-fraud", 60.0, 50, MemoryStore())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(10)


def _post_unanswered(address: tuple[str, int], body: bytes) -> None:
    """A request the scorer is stopped under: whatever it gets (a dropped connection, a 5xx)."""
    with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
        _post(address, body)


def _post(address: tuple[str, int], body: bytes, **headers: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    connection.request("POST", "/predict", body=body, headers=headers)
    reply = connection.getresponse()
    return reply.status, json.loads(reply.read())["error"]


def test_scorer_refuses_a_body_over_its_cap_before_reading_it(scorer: tuple[str, int]) -> None:
    limit = max_body_bytes(50)
    # declared larger than the cap: 413 after 1 KiB of the 100 MB has been sent
    with socket.create_connection(scorer, timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (100 * 2**20) + b" " * 1024
        )
        head = sock.recv(65536).decode()
    assert head.startswith("HTTP/1.1 413"), head
    assert f"at most {limit} per request" in head
    # sent in chunks with no length: read up to the cap, then 413
    chunks = (b'{"rows": [' + b'{"step": 1}, ' * 20_000 for _ in range(1))
    connection = http.client.HTTPConnection(*scorer, timeout=30)
    connection.request("POST", "/predict", body=chunks, encode_chunked=True)
    reply = connection.getresponse()
    assert reply.status == 413 and "\n" not in json.loads(reply.read())["error"]
    # a body just under the cap is read (and refused for what it says, not for its size)
    status, error = _post(scorer, b'{"rows": "' + b"a" * (limit - 20) + b'"}')
    assert status == 400 and "non-empty list" in error


def test_scorer_answers_malformed_or_deeply_nested_json_with_a_4xx(
    scorer: tuple[str, int],
) -> None:
    row = {"step": 1, "type": "PAYMENT", "amount": 9839.64}
    nested = json.dumps({"rows": [row | {"amount": [[[1]]]}]}).encode()
    bad = {
        "deep list": (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
        "deep in rows": (b'{"rows": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        "nested value": (nested, "'amount' must be a number or a string, not list"),
        "object value": (json.dumps({"rows": [row | {"type": {"a": 1}}]}).encode(), "'type'"),
        "huge integer": (b'{"rows": [{"step": ' + b"9" * 5000 + b"}]}", "not JSON"),
        "not UTF-8": (b"\xff\xfe{", "not JSON"),
        "truncated": (b'{"rows": [{"step": 1', "not JSON"),
    }
    for name, (body, text) in bad.items():
        status, error = _post(scorer, body, **{"Content-Type": "application/json"})
        assert status == 400, (name, status, error)
        assert text in error and "\n" not in error, (name, error)


def _scorer_process(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flame.cli", "serve"], env=os.environ | env | {
            "FLAME_SERVE_PORT": str(port)}, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_healthy(f"http://127.0.0.1:{port}/health", proc, log, timeout=120)
    return proc


def _score_one(port: int, row: dict[str, object]) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/predict", json.dumps({"rows": [row]}),
                       {"Content-Type": "application/json"})  # fmt: skip
    reply = connection.getresponse()
    body = json.loads(reply.read())
    assert reply.status == 200, body
    return float(body["predictions"][0]["fraud_probability"])


def test_a_region_scorer_fed_one_row_at_a_time_matches_flame_score_on_the_whole_file(
    tmp_path: Path, mlflow_server: str, redis_server: RedisServer
) -> None:
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    _register(tmp_path, client, client.create_experiment("stream"), 1)
    frame = generate(3_000, seed=21, fraud_rate=0.05).sort_values("step", kind="stable")
    frame = frame.head(240).reset_index(drop=True)  # the first steps: payees seen again, pairs
    csv = tmp_path / "eu.csv"
    frame.to_csv(csv, index=False)  # a PaySim-format file, labels included
    cli = [sys.executable, "-m", "flame.cli"]
    env = {"FLAME_MLFLOW_TRACKING_URI": mlflow_server, "FLAME_REGION": "eu",
           "FLAME_HISTORY_URL": redis_server.url, "FLAME_MLFLOW": "true"}  # fmt: skip
    subprocess.run([*cli, "score", str(csv), "--model", "models:/flame-fraud@champion", "--out",
                    str(tmp_path / "batch.csv")], env=os.environ | env, check=True)  # fmt: skip
    expected = pd.read_csv(tmp_path / "batch.csv")["fraud_probability"].to_numpy()
    model, card = load_scorer(tmp_path / "model1.pt")
    alone = [score_with(model, card, frame.iloc[[i]])["fraud_probability"].iloc[0]
             for i in range(len(frame))]  # fmt: skip
    rows = pd.read_csv(csv).drop(columns=["isFraud", "isFlaggedFraud"]).to_dict("records")
    ports = [free_port(), free_port()]
    scorers = [_scorer_process(p, env, tmp_path / f"scorer{i}.log") for i, p in enumerate(ports)]
    got = []
    try:
        for i, row in enumerate(rows):
            if i == len(rows) // 2:  # one replica dies mid-stream and comes back
                scorers[0].kill()
                scorers[0].wait()
                scorers[0] = _scorer_process(ports[0], env, tmp_path / "scorer0.log")
            got.append(_score_one(ports[i % 2], row))  # two replicas share the region's store
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/metrics").read().decode()
    finally:
        for proc in scorers:
            proc.terminate()
            proc.wait(timeout=30)
    assert np.abs(np.array(got) - expected).max() <= 1e-6
    assert np.abs(np.array(alone) - expected).max() > 1e-3  # the history changes the scores
    assert f"flame_scorer_rows_total {len(rows) // 2}.0" in metrics
    assert 'flame_scorer_requests_total{status="200"}' in metrics
    assert "flame_scorer_score_psi" in metrics


def test_health_answers_while_the_registry_is_unreachable(scorer: tuple[str, int]) -> None:
    # the compose healthcheck gives /health 3 s; the registry behind this scorer refuses
    # every connection, and MLflow's client retries for much longer than that
    for _ in range(3):
        connection = http.client.HTTPConnection(*scorer, timeout=3)
        connection.request("GET", "/health")
        reply = connection.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["model_version"] is None


def test_a_scorer_whose_registry_hangs_says_so_on_health_and_stops_promptly(
    tmp_path: Path,
) -> None:
    """The registry accepts connections and never answers: a /predict waits on it (no model
    yet), /health keeps answering within the healthcheck's 3 s and says the registry is
    degraded, and SIGTERM stops the process within seconds, not after MLflow's retries."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    port = free_port()
    env = {"FLAME_MLFLOW_TRACKING_URI": uri, "FLAME_HISTORY_URL": "memory://",
           "FLAME_SERVE_RELOAD": "1", "FLAME_STATE_DIR": str(tmp_path)}  # fmt: skip
    proc = _scorer_process(port, env, tmp_path / "scorer.log")
    row = generate(50, seed=3).drop(columns=["isFraud", "isFlaggedFraud"]).iloc[0].to_dict()
    body = json.dumps({"rows": [row]}, default=str).encode()
    waiting = threading.Thread(
        target=_post_unanswered, args=(("127.0.0.1", port), body), daemon=True
    )
    try:
        waiting.start()  # held by the registry
        time.sleep(1.0)
        deadline, health = time.monotonic() + 60, {}
        while time.monotonic() < deadline and health.get("status") != "degraded":
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
            connection.request("GET", "/health")
            reply = connection.getresponse()
            assert reply.status == 200
            health = json.loads(reply.read())
            time.sleep(0.5)
        assert health["status"] == "degraded" and uri in health["registry"], health
        started = time.monotonic()
        proc.terminate()
        proc.wait(timeout=30)
        assert time.monotonic() - started < 12, "SIGTERM took too long"
    finally:
        proc.kill()
        silent.close()


def test_a_scorer_whose_history_store_hangs_answers_503_says_so_on_health_and_stops(
    tmp_path: Path, mlflow_server: str
) -> None:
    """The region's Redis accepts connections and never answers: a /predict gets a 503 naming
    the store within seconds (a row is never scored without its history), /health keeps
    answering within the healthcheck's 3 s and says the history is degraded, SIGTERM stops."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    history_url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    _register(tmp_path, client, client.create_experiment("hung-history"), 1)
    port = free_port()
    env = {"FLAME_MLFLOW_TRACKING_URI": mlflow_server, "FLAME_HISTORY_URL": history_url,
           "FLAME_REGION": "eu", "FLAME_STATE_DIR": str(tmp_path)}  # fmt: skip
    proc = _scorer_process(port, env, tmp_path / "scorer.log")
    row = generate(50, seed=3).drop(columns=["isFraud", "isFlaggedFraud"]).iloc[0].to_dict()
    body = json.dumps({"rows": [row]}, default=str).encode()
    try:
        started = time.monotonic()
        status, error = _post(("127.0.0.1", port), body)
        assert status == 503 and history_url.split("//")[1].split("/")[0] in error, error
        assert "FLAME_HISTORY_URL" in error and time.monotonic() - started < 10, error
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        connection.request("GET", "/health")
        health = json.loads(connection.getresponse().read())
        assert health["status"] == "degraded" and "unreachable" in health["history"], health
        started = time.monotonic()
        proc.terminate()
        proc.wait(timeout=30)
        assert time.monotonic() - started < 12, "SIGTERM took too long"
    finally:
        proc.kill()
        silent.close()
