"""What a ClientApp task knows of itself before it runs: the settings the server sent merged
with the node's own, its region and its seeds. Shared by the ClientApp's handlers and mods."""

from __future__ import annotations

import zlib

from flwr.app import Context, Message

from flame.fl.protocol import Refusal
from flame.settings import RUN_SETTINGS_KEY, FlameSettings, SettingsError, region_settings


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


def task_settings(msg: Message) -> FlameSettings:
    """This task's settings: the run's, as the server sent them, and this node's own."""
    config = msg.content.config_records.get("config")
    sent = config.get(RUN_SETTINGS_KEY) if config is not None else None
    if not isinstance(sent, str):
        raise Refusal("the task carries no run settings (a server running another Flame?)")
    try:
        return region_settings(sent)
    except (SettingsError, ValueError) as err:  # a malformed JSON or an invalid value
        raise Refusal(f"the run settings the server sent are refused: {err}") from None


def region_seed(settings: FlameSettings, region: str, rnd: int) -> int:
    return settings.seed + 1000 * rnd + zlib.crc32(region.encode()) % 1000
