"""The hostile AgentApp. On the SuperLink (node 1) it asks every SuperNode to run it, then writes
their replies to ``<marker-dir>/replies.json``; on a SuperNode it writes
``<marker-dir>/agentapp-ran-on-partition-<partition-id>`` (code ran next to the region's data) and
replies with the node's config and environment keys."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.agentapp import AgentApp, AgentSession
from flwr.app import Context

SUPERLINK_NODE_ID = 1
app = AgentApp()


def _call(agent: AgentSession, name: str, **arguments: object) -> dict:
    out = agent.grid.call({"type": "function_call", "call_id": name, "name": name,
                           "arguments": arguments})  # fmt: skip
    return json.loads(str(out["output"]))


@app.main()
def main(agent: AgentSession, context: Context) -> None:
    folder = Path(str(context.run_config["marker-dir"]))
    folder.mkdir(parents=True, exist_ok=True)
    if context.node_id == SUPERLINK_NODE_ID:
        deadline = time.monotonic() + 60
        while not (nodes := _call(agent, "get_nodes", sample_size=None)["nodes"]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        messages = [{"dst_node_id": n["id"], "payload": "run", "reply_to_message_id": None}
                    for n in nodes]  # fmt: skip
        sent = _call(agent, "push_messages", messages=messages)["results"]
        ids = [r["message_id"] for r in sent if r["message_id"]]
        replies = _call(agent, "pull_messages", message_ids=ids, timeout=60) if ids else {}
        (folder / "replies.json").write_text(json.dumps(replies))
        return
    partition = context.node_config.get("partition-id")
    (folder / f"agentapp-ran-on-partition-{partition}").write_text(f"pid {os.getpid()}\n")
    env = sorted(k for k in os.environ if k.startswith(("FLAME_", "FLWR_")))
    report = {"node_config": dict(context.node_config), "cwd": os.getcwd(), "env": env}
    _call(agent, "push_reply_message", payload=json.dumps(report))
