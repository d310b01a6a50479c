"""What a ClientApp task knows of itself before it runs: the run's settings (Flower's run
config) merged with the node's own, its region and its seeds. Shared by the ClientApp's handlers
and mods."""

from __future__ import annotations

import zlib

from flwr.app import Context

from flame.fl.protocol import Refusal
from flame.settings import FlameSettings, SettingsError, region_settings


def region_name(context: Context, regions: list[str]) -> str:
    """The node's own ``region`` (deployment), else FLAME_REGIONS[partition-id] (simulation)."""
    if "region" in context.node_config:
        return str(context.node_config["region"])
    index = int(context.node_config.get("partition-id", 0))
    if index >= len(regions):
        raise ValueError(
            f"SuperNode partition-id {index} has no region: FLAME_REGIONS lists "
            f"{regions}; run as many SuperNodes as regions"
        )
    return regions[index]


def task_settings(context: Context) -> FlameSettings:
    """This task's settings: the run's, from its run config, and this node's own."""
    try:
        return region_settings(context.run_config)
    except (SettingsError, ValueError) as err:  # no Flame run, or an invalid value
        raise Refusal(f"the run's config is refused: {err}") from None


def region_seed(seed: int, region: str, rnd: int) -> int:
    return seed + 1000 * rnd + zlib.crc32(region.encode()) % 1000
