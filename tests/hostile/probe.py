"""A coordinator probing the regions' privacy limits in one run, with the genuine ClientApp on
the other side: train tasks whose accounting would not hold (a sampling rate below 1/rows, a
noise multiplier of 0), then evaluate messages with the same weights past the region's cap.

Writes ``<HOSTILE_OUT>/probe.json``: per attempt and region, the region's error reason, or
``"answered"`` and the fraud histogram it sent.
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
    messages = [task(settings, arrays, 1, node, kind, threshold=0.5) for node in nodes]
    replies = PackedGrid(grid).send_and_receive(messages, timeout=settings.round_timeout)
    return dict(outcome(reply) for reply in replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()
    base = load_settings(
        context.run_config, dp=True, dp_target_epsilon=1.0, num_server_rounds=1, codec="none"
    )
    torch.manual_seed(base.seed)
    model = FraudMLP(len(feature_names(base.drop_balance_features)), base.hidden_sizes)
    arrays = ArrayRecord(model.state_dict())
    nodes = wait_for_nodes(grid, len(base.regions))
    found: dict[str, object] = {}
    tiny = base.model_copy(update={"dp_sample_rate": 1e-12, "dp_noise_multiplier": 1.0})
    found["tiny_rate"] = attempt(grid, tiny, arrays, nodes, MessageType.TRAIN)
    zero = base.model_copy(update={"dp_noise_multiplier": 0.0})
    found["zero_noise"] = attempt(grid, zero, arrays, nodes, MessageType.TRAIN)
    found["evaluations"] = [
        attempt(grid, base, arrays, nodes, MessageType.EVALUATE) for _ in range(EVALUATIONS)
    ]
    (out_folder() / "probe.json").write_text(json.dumps(found, indent=1))
    log.info("probe done: %s", json.dumps(found)[:2000])
