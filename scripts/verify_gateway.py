"""Check, from the host (outside the compose network), that the public port publishes only the
Fleet API: `flwr run` and `flwr ls` against it are refused and no run is added, while the
coordinator's own 127.0.0.1:8000 still lists the runs. Exit 0 only if all of that holds.

    python scripts/verify_gateway.py --ca CA_CRT [--gateway HOST:9443] [--control HOST:8000]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLWR = Path(sys.executable).with_name("flwr")


def status(url: str, ca: Path, body: bytes | None = b"") -> int:
    """HTTP status of a request (POST when ``body`` is given)."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), context=context,
                                    timeout=10) as reply:  # fmt: skip
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def flwr(args: list[str], address: str, ca: Path) -> subprocess.CompletedProcess[str]:
    """The real `flwr` CLI against ``address`` (its own FLWR_HOME with one connection)."""
    home = Path(tempfile.mkdtemp(prefix="flame-gw-"))
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "c"\n\n[superlink.c]\naddress = "{address}"\n'
        f'root-certificates = "{ca.resolve()}"\n'
    )
    env = os.environ | {"FLWR_HOME": str(home)}
    return subprocess.run([str(FLWR), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def run_ids(address: str, ca: Path) -> set[str] | None:
    listed = flwr(["ls", "c", "--format", "json"], address, ca)
    if listed.returncode != 0:
        return None
    return {run["run-id"] for run in json.loads(listed.stdout)["runs"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("--gateway", default="127.0.0.1:9443")
    p.add_argument("--control", default="127.0.0.1:8000")
    args = p.parse_args()
    failures = []
    before = run_ids(args.control, args.ca)
    if before is None:
        failures.append(f"flwr ls on the coordinator's own {args.control} failed")
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/serverappio/x", "/"):
        code = status(f"https://{args.gateway}{path}", args.ca)
        print(f"verify-gateway: POST {path} on the public port -> HTTP {code}")
        if code != 403:
            failures.append(f"{path} answered {code}, not 403")
    code = status(f"https://{args.gateway}/health", args.ca, body=None)
    if code != 200:
        failures.append(f"GET /health through the gateway answered {code}, not 200")
    submitted = flwr(["run", ".", "c"], args.gateway, args.ca)
    print(f"verify-gateway: flwr run on the public port -> exit {submitted.returncode}")
    if submitted.returncode == 0:
        failures.append("flwr run through the public port was accepted")
    if flwr(["ls", "c"], args.gateway, args.ca).returncode == 0:
        failures.append("flwr ls through the public port was accepted")
    after = run_ids(args.control, args.ca)
    if before is not None and after != before:
        failures.append(f"runs changed from {sorted(before)} to {sorted(after or [])}")
    for failure in failures:
        print(f"verify-gateway: FAILED: {failure}", file=sys.stderr)
    if not failures:
        print("verify-gateway: the public port refuses the Control API; regions joined through it")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
