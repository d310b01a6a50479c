"""Flame ClientApp: one region's training and validation, on Flower's Message API.

The region comes from node config ``region`` (deployment) or the simulation's ``partition-id``
(index into FLAME_REGIONS). Data comes from node config ``data-path`` (the region's own file)
or from the prepared partition cache. Raw rows never leave this process: only model weights,
counts, losses and score histograms are sent.

Every message runs in a fresh process in deployment, so the import path is kept light: torch,
Flower and numpy only. The region's features come from the ``.npy`` cache (built by
``flame data split`` or on first use); pandas, pyarrow, scikit-learn and Opacus are imported only
when the cache is missing or DP is on.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flame import metrics as fm
from flame.attacks import poison_labels, poison_update
from flame.cache import cached_region
from flame.compression import client_encode
from flame.features import feature_names
from flame.model import FraudMLP
from flame.protocol import INFO_KEY
from flame.settings import FlameSettings, load_settings
from flame.train import default_pos_weight, predict_logits, train_epochs

app = ClientApp()

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def region_name(context: Context, settings: FlameSettings) -> str:
    if "region" in context.node_config:
        return str(context.node_config["region"])
    index = int(context.node_config.get("partition-id", 0))
    if index >= len(settings.regions):
        raise ValueError(
            f"SuperNode partition-id {index} has no region: FLAME_REGIONS lists "
            f"{settings.regions}; run as many SuperNodes as regions"
        )
    return settings.regions[index]


@lru_cache(maxsize=4)
def region_tensors(settings_json: str, region: str, data_path: str) -> Tensors:
    """Train and validation tensors of one region, built once per process."""
    settings = FlameSettings.model_validate_json(settings_json)
    arrays = cached_region(settings, region, data_path)
    if arrays is None:  # first use: build the cache (imports pandas/pyarrow once)
        from flame.partition import file_arrays, region_arrays

        arrays = (
            file_arrays(Path(data_path), settings) if data_path else region_arrays(settings, region)
        )
    (x, y), (x_val, y_val) = arrays["train"], arrays["val"]
    return tuple(torch.from_numpy(a) for a in (x, y, x_val, y_val))  # type: ignore[return-value]


def _setup(msg: Message, context: Context) -> tuple[FlameSettings, str, FraudMLP, Tensors]:
    settings = load_settings(context.run_config)
    torch.set_num_threads(settings.torch_threads)
    region = region_name(context, settings)
    data_path = str(context.node_config.get("data-path", ""))
    tensors = region_tensors(settings.model_dump_json(), region, data_path)
    model = FraudMLP(len(feature_names(settings.drop_balance_features)), settings.hidden_sizes)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return settings, region, model, tensors


def _reply(msg: Message, region: str, content: dict[str, object]) -> Message:
    content[INFO_KEY] = ConfigRecord({"region": region})
    return Message(RecordDict(content), reply_to=msg)  # type: ignore[arg-type]


def region_seed(settings: FlameSettings, region: str, rnd: int) -> int:
    return settings.seed + 1000 * rnd + zlib.crc32(region.encode()) % 1000


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings, region, model, (x, y, _, _) = _setup(msg, context)
    config = msg.content["config"]
    rnd = int(config["server-round"])
    adversary = region in settings.adversarial_regions
    if adversary:
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        y = poison_labels(y, settings.attack)
    pos_weight = float(config["pos-weight"]) or default_pos_weight(y.numpy())
    extra: dict[str, float] = {}
    if settings.dp:
        from flame.privacy import dp_train

        loss, epsilon, exhausted = dp_train(
            model, x, y, settings=settings, state=context.state,
            rounds=int(config["num-server-rounds"]), epochs=int(config["local-epochs"]),
            lr=float(config["learning-rate"]), pos_weight=pos_weight,
            seed=region_seed(settings, region, rnd),
        )  # fmt: skip
        extra = {"epsilon": epsilon, "dp-exhausted": int(exhausted)}
    else:
        loss = train_epochs(
            model, x, y, epochs=int(config["local-epochs"]), lr=float(config["learning-rate"]),
            batch_size=int(config["batch-size"]), pos_weight=pos_weight,
            seed=region_seed(settings, region, rnd), desc=f"{region} round {rnd}",
        )  # fmt: skip
    state = model.state_dict()
    if adversary:
        seed = region_seed(settings, region, rnd)
        state = poison_update(global_state, state, settings.attack, settings.attack_scale, seed)
    received: ArrayRecord = msg.content["arrays"]
    codec = str(config.get("codec", "none"))
    if codec == "none":
        arrays = ArrayRecord(state)
    else:
        global_arrays = {k: received[k].numpy() for k in received}
        local = {k: v.detach().numpy() for k, v in state.items()}
        ratio = float(config.get("topk-ratio", 0.1))
        seed = region_seed(settings, region, rnd)
        arrays = client_encode(global_arrays, local, codec, ratio, context.state, seed)
    extra |= {"bytes-sent": arrays.count_bytes(), "bytes-received": received.count_bytes()}
    record = MetricRecord({"train-loss": loss, "num-examples": len(x), **extra})
    return _reply(msg, region, {"arrays": arrays, "metrics": record})


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, region, model, (_, _, x_val, y_val) = _setup(msg, context)
    threshold = float(msg.content["config"]["threshold"])
    record = fm.region_metrics(predict_logits(model, x_val), y_val.numpy(), threshold)
    record |= {"num-examples": len(y_val), "threshold": threshold}
    return _reply(msg, region, {"metrics": MetricRecord(record)})  # type: ignore[arg-type]
