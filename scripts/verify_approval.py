"""Play a rogue FAB against a running compose stack's regions and check that no region runs it
(docs/operations.md, "Threat model"; tests/test_trust_boundaries.py plays the same on loopback).

    python scripts/verify_approval.py agentapp --project P --ca CA_CRT --regions us,eu
        An AgentApp-only FAB (tests/hostile/agentapp), submitted with a user prompt as `flwr chat`
        does, from the coordinator's host (127.0.0.1:8000, a local user's reach): each region
        must log its refusal, and the marker the AgentApp writes where it runs must not appear
        in any region container.
    python scripts/verify_approval.py plant --project P --regions us,eu
        Writes, in each region container, an install folder at the exact path Flower installs
        the approved app to ($FLWR_HOME/apps/...), whose pyproject names a planted ClientApp
        (what an earlier task could write); then run the approved app.
    python scripts/verify_approval.py planted --project P --regions us,eu
        After that run: the planted folder is still there and its code never ran.
Exit 0 only if all of that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARKERS = "/tmp/flame-rogue"  # in each region container (its tmpfs)

# Run in a region container: the planted install folder of the image's own (approved) app.
PLANT = f"""
import io, tomllib, zipfile
from pathlib import Path
from flwr.cli.build import build_fab_from_disk
from flwr.common.config import get_project_dir
from flame.ops.approval import fab_hash
fab = build_fab_from_disk(Path("/app"))
version = tomllib.loads(Path("/app/pyproject.toml").read_text())["project"]["version"]
folder = get_project_dir("flame/flame", version, fab_hash(fab))
zipfile.ZipFile(io.BytesIO(fab)).extractall(folder)
(folder / ".info" / "CONTENT").unlink()
(folder / ".info").rmdir()
pyproject = folder / "pyproject.toml"
genuine = 'clientapp = "flame.fl.client_app:app"'
assert genuine in pyproject.read_text()
pyproject.write_text(pyproject.read_text().replace(genuine, 'clientapp = "planted:app"'))
(folder / "planted.py").write_text('''
from pathlib import Path
from flwr.clientapp import ClientApp
from flame.fl.client_app import app as genuine
app = ClientApp()
def mark(message, context):
    Path("{MARKERS}").mkdir(exist_ok=True)
    with (Path("{MARKERS}") / "planted-code-ran").open("a") as out:
        out.write(message.metadata.message_type + "\\\\n")
    return genuine(message, context)
app.train()(mark)
app.evaluate()(mark)
''')
print(folder)
"""


def compose(project: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "compose", "-p", project, *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def markers(project: str, region: str) -> list[str]:
    done = compose(project, "exec", "-T", f"{region}-client", "sh", "-c",
                   f"ls {MARKERS} 2>/dev/null || true")  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"verify-approval: cannot look into {region}-client: {done.stderr}")
    return done.stdout.split()


def agentapp(project: str, ca: Path, regions: list[str], control: str) -> list[str]:
    from flame.ops.launch import write_connection

    home = Path(tempfile.mkdtemp(prefix="flame-rogue-"))
    write_connection(control, ca, home)
    env = os.environ | {"FLWR_HOME": str(home)}
    since = str(int(time.time()) - 1)
    started = subprocess.run(
        [sys.executable, "-m", "tests.hostile.agent_run", "tests/hostile/agentapp",
         "summarise the fraud rate of each region", f"marker-dir={MARKERS}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if started.returncode != 0:
        return [f"the rogue AgentApp run could not be submitted: {started.stderr[-500:]}"]
    run_id = started.stdout.split()[-1]
    refusal = f"refused: run {run_id} is a flwr-agentapp run"
    pending, deadline = set(regions), time.monotonic() + 180
    while pending and time.monotonic() < deadline:
        for region in sorted(pending):
            logs = compose(project, "logs", "--no-color", "--since", since, f"{region}-client")
            if refusal in logs.stdout + logs.stderr:
                pending.discard(region)
        time.sleep(2)
    subprocess.run([str(Path(sys.executable).with_name("flwr")), "stop", run_id, "flame"],
                   env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    problems = [f"{r}-client did not refuse the AgentApp run {run_id}" for r in sorted(pending)]
    for region in regions:
        if ran := markers(project, region):
            problems.append(f"the rogue AgentApp ran in {region}-client: {ran}")
        else:
            print(f"verify-approval: {region}-client refused the AgentApp-only FAB; it never ran")
    return problems


def plant(project: str, regions: list[str]) -> list[str]:
    problems = []
    for region in regions:
        done = compose(project, "exec", "-T", f"{region}-client", "python", "-c", PLANT)
        if done.returncode != 0:
            problems.append(f"planting in {region}-client failed: {done.stderr[-500:]}")
        else:
            print(f"verify-approval: planted {done.stdout.strip()} in {region}-client")
    return problems


def planted(project: str, regions: list[str]) -> list[str]:
    problems = []
    for region in regions:
        found = compose(project, "exec", "-T", f"{region}-client", "sh", "-c",
                        "ls /tmp/flwr/apps/*/planted.py")  # fmt: skip
        if found.returncode != 0:
            problems.append(f"no planted folder left in {region}-client: the check proves nothing")
        elif ran := markers(project, region):
            problems.append(f"the planted ClientApp ran in {region}-client: {ran}")
        else:
            print(f"verify-approval: {region}-client ran the approved app, not the planted folder")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack", choices=["agentapp", "plant", "planted"])
    parser.add_argument("--project", required=True)
    parser.add_argument("--regions", required=True, help="comma-separated region names")
    parser.add_argument("--ca", type=Path, help="the federation's ca.crt (agentapp)")
    parser.add_argument("--control", default="127.0.0.1:8000", help="the Control API (agentapp)")
    args = parser.parse_args()
    regions = args.regions.split(",")
    if args.attack == "agentapp":
        if args.ca is None:
            parser.error("agentapp needs --ca")
        problems = agentapp(args.project, args.ca, regions, args.control)
    else:
        problems = (plant if args.attack == "plant" else planted)(args.project, regions)
    for line in problems:
        print(f"verify-approval: FAILED: {line}", file=sys.stderr)
    print(json.dumps({"attack": args.attack, "refused": not problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
