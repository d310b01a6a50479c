"""Start an AgentApp run the way ``flwr chat`` does (``flwr.cli.chat.chat_app.start_chat_run``): a
local FAB plus a user prompt in one ``StartRunRequest`` over the Control API, here on the
``flame`` connection of ``$FLWR_HOME``. Prints the run id.

    python -m tests.hostile.agent_run APP_FOLDER PROMPT [key=value ...]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from flwr.cli.build import build_fab_from_disk
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import init_http_client_from_connection
from flwr.common.serde import user_config_to_proto
from flwr.proto.control_pb2 import StartRunRequest
from flwr.proto.fab_pb2 import Fab

from flame.ops.launch import CONNECTION


def start(app: Path, prompt: str, config: dict[str, str]) -> int:
    fab = build_fab_from_disk(app)
    client = init_http_client_from_connection(read_superlink_connection(CONNECTION))
    try:
        response = client.StartRun(
            StartRunRequest(
                fab=Fab(hash_str=hashlib.sha256(fab).hexdigest(), content=fab),
                user_prompt=prompt,
                override_config=user_config_to_proto(config),
            )
        )
    finally:
        client.close()
    if not response.HasField("run_id"):
        raise SystemExit("the SuperLink started no run")
    return int(response.run_id)


if __name__ == "__main__":
    folder, text, *pairs = sys.argv[1:]
    print(start(Path(folder), text, dict(p.split("=", 1) for p in pairs)))
