"""Play a compromised region and an outsider against a running compose stack and check each is
refused (docs/operations.md, "Network and limits"). Exit 0 only if all of that holds:

- from inside every region container: the SuperLink's port 8000, MLflow's port 5000 and every
  region's scorer and Redis (its own included) are unreachable, by service name and by each of
  their addresses, while gateway:9443 answers;
- from a container on the SuperLink's own network: a task request without the SuperExec
  secret's signature is refused (Flower's SuperExec authentication);
- from the host: a 100 MB body to the gateway gets 413 (a 5 MiB one, a Fleet object's most,
  still reaches the SuperLink), and a burst of requests from one address gets 429.

    python scripts/verify_boundaries.py --project P --ca CA_CRT [--gateway HOST:9443]
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run inside a region container: one JSON line, {"host:port": "open" | "<why it failed>"}.
PROBE = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        out[target] = "open"
    except OSError as err:
        out[target] = type(err).__name__ + ": " + str(err)
print(json.dumps(out))
"""

# Run in a container on `control`: Flower's AcquireTask with no SuperExec signature.
ACQUIRE = """
import ssl, urllib.error, urllib.request as u
context = ssl.create_default_context(cafile="/certs/ca.crt")
request = u.Request("https://superlink:8000/v1/runtime/acquire-task", data=b"",
                    headers={"Content-Type": "application/protobuf"})
try:
    print(u.urlopen(request, context=context, timeout=10).status)
except urllib.error.HTTPError as err:
    print(err.code, err.read().decode(errors="replace")[:200].replace("\\n", " "))
"""


def compose(project: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "compose", "-p", project, *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def addresses(project: str, service: str) -> list[str]:
    """Every address the service's container has, on each of its networks."""
    ids = compose(project, "ps", "-q", service).stdout.split()
    if not ids:
        return []
    inspected = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True)
    networks = json.loads(inspected.stdout)[0]["NetworkSettings"]["Networks"]
    return [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]


def post(gateway: str, ca: Path, body: bytes, path: str = "/v1/fleet/push-object") -> int | str:
    host, port = gateway.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=60)
    try:
        connection.request("POST", path, body=body,
                           headers={"Content-Type": "application/protobuf"})  # fmt: skip
        return connection.getresponse().status
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    finally:
        connection.close()


def burst(gateway: str, ca: Path, count: int, connections: int = 8) -> dict[int, int]:
    """``count`` GET /health over ``connections`` kept-alive connections at once, as fast as
    they go (far above a polling SuperNode's 4-10 a second): how many got each status."""
    host, port = gateway.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))

    def one_connection(n: int) -> list[int]:
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        statuses = []
        for _ in range(n):
            connection.request("GET", "/health")
            reply = connection.getresponse()
            reply.read()
            statuses.append(reply.status)
        connection.close()
        return statuses

    with ThreadPoolExecutor(connections) as pool:
        results = pool.map(one_connection, [count // connections] * connections)
    return dict(Counter(status for statuses in results for status in statuses))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--project", required=True)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("--gateway", default="127.0.0.1:9443")
    p.add_argument("--regions", default="us,eu")
    args = p.parse_args()
    failures = []

    closed = ["superlink:8000", "mlflow:5000"]
    closed += [f"{a}:8000" for a in addresses(args.project, "superlink")]
    closed += [f"{a}:5000" for a in addresses(args.project, "mlflow")]
    for region in args.regions.split(","):  # every region's scorer and its history store
        closed += [f"{region}-scorer:8080", f"{region}-redis:6379"]
        closed += [f"{a}:6379" for a in addresses(args.project, f"{region}-redis")]
    for region in args.regions.split(","):
        probe = compose(args.project, "exec", "-T", f"{region}-client", "python", "-c", PROBE,
                        "gateway:9443", *closed)  # fmt: skip
        if probe.returncode != 0:
            failures.append(f"the probe failed in {region}-client: {probe.stderr.strip()}")
            continue
        seen = json.loads(probe.stdout.strip().splitlines()[-1])
        for target, result in seen.items():
            print(f"verify-boundaries: {region}-client -> {target}: {result}")
        if seen.pop("gateway:9443") != "open":
            failures.append(f"{region}-client cannot reach gateway:9443")
        reached = [t for t, result in seen.items() if result == "open"]
        if reached:
            failures.append(f"{region}-client reaches {', '.join(reached)}")
        else:
            print(f"verify-boundaries: {region}-client reaches only the gateway")

    acquired = compose(args.project, "run", "--rm", "--no-deps", "-T", "launcher",
                       "python", "-c", ACQUIRE)  # fmt: skip
    answer = acquired.stdout.strip().splitlines()[-1:] or [acquired.stderr.strip()[-200:]]
    print(f"verify-boundaries: unsigned AcquireTask on superlink:8000 -> {answer[0]}")
    # 1008: Flower's RUNTIME_AUTHENTICATION_FAILED (without the secret: 200, and a task)
    if not answer[0].startswith("401") or '"code":1008' not in answer[0]:
        failures.append("a task request without the SuperExec secret was not refused")
    else:
        print("verify-boundaries: the SuperLink refuses task requests without the SuperExec secret")

    big = post(args.gateway, args.ca, b"\0" * (100 * 2**20))
    print(f"verify-boundaries: POST 100 MB to the gateway -> {big}")
    if big != 413:
        failures.append(f"a 100 MB body to the gateway answered {big}, not 413")
    fits = post(args.gateway, args.ca, b"\0" * (5 * 2**20))
    print(f"verify-boundaries: POST 5 MiB (a Fleet object's most) -> {fits} (from the SuperLink)")
    if fits in (413, 429) or not isinstance(fits, int):
        failures.append(f"a 5 MiB body to the gateway answered {fits}")
    if big == 413 and fits not in (413, 429):
        print("verify-boundaries: the gateway refuses a 100 MB body with 413")

    start = time.monotonic()
    seen = burst(args.gateway, args.ca, 400)
    took = time.monotonic() - start
    print(f"verify-boundaries: 400 requests from one address in {took:.1f} s -> {seen}")
    if not seen.get(429) or not seen.get(200):
        failures.append(f"a burst of 400 requests was not rate-limited: {seen}")
    else:
        print("verify-boundaries: the gateway rate-limits a burst from one address")

    for failure in failures:
        print(f"verify-boundaries: FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
