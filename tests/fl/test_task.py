"""flame/fl/task.py: a ClientApp task's region, settings and seeds."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from flame.fl.protocol import Refusal
from flame.fl.task import region_name, region_seed, task_settings
from flame.settings import load_settings, run_config


def _context(node: dict, run: dict) -> Context:
    return Context(run_id=1, node_id=2, node_config=node, state=RecordDict(), run_config=run)


def test_a_node_is_its_configured_region_or_the_one_its_partition_names() -> None:
    regions = ["us", "eu"]
    assert region_name(_context({"region": "apac"}, {}), regions) == "apac"
    assert region_name(_context({"partition-id": 1}, {}), regions) == "eu"
    with pytest.raises(ValueError, match="partition-id 2 has no region"):
        region_name(_context({"partition-id": 2}, {}), regions)


def test_a_task_takes_the_runs_settings_from_the_run_config_only() -> None:
    run = run_config(load_settings(num_server_rounds=7, codec="int8"))
    settings = task_settings(_context({}, run))
    assert (settings.num_server_rounds, settings.codec) == (7, "int8")
    with pytest.raises(Refusal, match="no Flame run setting"):
        task_settings(_context({}, {"some-other-app": 1}))
    with pytest.raises(Refusal, match="FLAME_CODEC"):
        task_settings(_context({}, run | {"codec": "gzip"}))


def test_each_region_and_round_has_its_own_seed() -> None:
    seeds = {region_seed(5, r, n) for r in ("us", "eu") for n in (1, 2, 3)}
    assert len(seeds) == 6
    assert region_seed(5, "us", 1) == region_seed(5, "us", 1) != region_seed(6, "us", 1)
