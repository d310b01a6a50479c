"""A coordinator probing the regions' privacy limits, with the genuine ClientApp on the other
side, one probe per run (the run config the coordinator submits is what the regions train with):
a train task whose accounting would not hold (run config: a sampling rate below 1/rows, or a
noise multiplier of 0), else evaluate messages with the same weights past the region's cap.

Writes ``<HOSTILE_OUT>/probe-<attempt>.json``: per region, the region's error reason, or the
fraud histogram it sent (a list of them for the evaluations).
"""

from __future__ import annotations

import json
import logging

import torch
from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.serverapp import Grid, ServerApp

from flame.data.features import feature_names
from flame.fl.packing import PackedGrid
from flame.fl.protocol import INFO_KEY
from flame.log import setup_logging
from flame.model.net import FraudMLP
from flame.settings import FlameSettings, load_settings
from tests.hostile import out_folder, task, wait_for_nodes

EVALUATIONS = 4  # sent with the same weights; the regions' test policy allows 3
app = ServerApp()
log = logging.getLogger("flame.hostile")


def outcome(reply: Message) -> tuple[str, object]:
    """(region or node, error reason / the fraud histogram answered)."""
    if reply.has_error():
        return str(reply.metadata.src_node_id), reply.error.reason
    region = str(reply.content.config_records[INFO_KEY]["region"])
    return region, list(reply.content.metric_records["metrics"]["hist_pos"])


def attempt(
    grid: Grid, settings: FlameSettings, arrays: ArrayRecord, nodes: list[int], kind: str
) -> dict[str, object]:
    messages = [task(arrays, 1, node, kind, threshold=0.5) for node in nodes]
    replies = PackedGrid(grid).send_and_receive(messages, timeout=settings.round_timeout)
    return dict(outcome(reply) for reply in replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()
    settings = load_settings(context.run_config)  # the run's: what the regions train with
    torch.manual_seed(settings.seed)
    model = FraudMLP(len(feature_names(settings.drop_balance_features)), settings.hidden_sizes)
    arrays = ArrayRecord(model.state_dict())
    nodes = wait_for_nodes(grid, len(settings.regions))
    name = probe_name(settings)
    found: object
    if name == "evaluations":
        found = [
            attempt(grid, settings, arrays, nodes, MessageType.EVALUATE) for _ in range(EVALUATIONS)
        ]
    else:
        found = attempt(grid, settings, arrays, nodes, MessageType.TRAIN)
    (out_folder() / f"probe-{name}.json").write_text(json.dumps(found, indent=1))
    log.info("probe %s done: %s", name, json.dumps(found)[:2000])


def probe_name(settings: FlameSettings) -> str:
    """Which probe this run's config asks for."""
    if settings.dp_sample_rate and settings.dp_sample_rate < 1e-6:
        return "tiny_rate"
    if settings.dp_noise_multiplier == 0.0:
        return "zero_noise"
    return "evaluations"
