from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flame.ops.compose_regions import FILE, render
from flame.settings import FlameSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_regions_file_is_the_template_for_the_default_regions() -> None:
    default = FlameSettings.model_fields["regions"].default
    assert (ROOT / FILE).read_text() == render(default)
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert str(FILE) in main["include"]
    assert not [s for s in main["services"] if s.endswith("-client")]  # regions live there only


def test_a_third_region_is_a_service_that_sees_only_its_own_folders() -> None:
    services = yaml.safe_load(render(["us", "eu", "apac"]))["services"]
    assert list(services) == ["state-folders"] + [
        f"{r}-{kind}"
        for r in ("us", "eu", "apac")
        for kind in ("key", "register", "client", "redis", "scorer")
    ]
    apac = services["apac-client"]
    assert apac["environment"]["FLAME_REGION"] == "apac"
    mounts = {m["source"]: m for m in apac["volumes"]}
    assert mounts["region-data"]["volume"]["subpath"] == "apac"
    assert mounts["region-keys"]["volume"]["subpath"] == "apac"
    assert mounts["region-keys"]["read_only"] is True
    assert "/keys/node.key" in apac["command"]
    assert "gateway:9443" in apac["command"] and "apac-register" in apac["depends_on"]
    # its private state (secret, ledger): its own folder of region-state, made before it starts
    assert mounts["region-state"]["volume"]["subpath"] == "apac"
    assert mounts["region-state"]["target"] == "/state/apac"
    assert apac["environment"]["FLAME_STATE_DIR"] == "/state"
    assert "state-folders" in apac["depends_on"]
    assert "/state/apac" in services["state-folders"]["command"][-1]


def test_each_region_makes_its_own_key_and_only_its_public_key_travels() -> None:
    """Keys made where they are used: no coordinator service mounts a region's key folder,
    and the region's registration step sees its node.pub only."""
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = main["services"] | yaml.safe_load(render(["us", "eu", "apac"]))["services"]

    def mounts(name: str) -> dict[str, dict[str, object]]:
        found = [v if isinstance(v, dict) else {"source": v.split(":")[0]}
                 for v in services[name].get("volumes", [])]  # fmt: skip
        return {str(v["source"]): v for v in found}

    holders = {n for n in services if "region-keys" in mounts(n)}
    assert holders == {"state-folders"} | {f"{r}-{k}" for r in ("us", "eu", "apac")
                                           for k in ("key", "client")}  # fmt: skip
    key = services["apac-key"]
    assert key["network_mode"] == "none"
    assert key["command"][:4] == ["flame", "keygen", "--out", "/keys"]
    assert mounts("apac-key")["region-keys"]["volume"] == {"subpath": "apac"}
    register = mounts("apac-register")
    assert set(register) == {"public-keys", "certs-client"}
    assert register["public-keys"]["read_only"] is True
    assert register["public-keys"]["volume"]["subpath"] == "apac"
    assert "/keys/apac.pub" in services["apac-register"]["command"]
    # the coordinator's credentials step makes no region key and hands none out
    assert "certs-regions" not in main["volumes"]
    assert "region-keys" not in mounts("certs")


def test_no_coordinator_service_mounts_a_regions_state() -> None:
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "region-state" in main["volumes"]
    for name, service in main["services"].items():
        sources = [v["source"] if isinstance(v, dict) else v.split(":")[0]
                   for v in service.get("volumes", [])]  # fmt: skip
        assert "region-state" not in sources, name
    regions = yaml.safe_load((ROOT / FILE).read_text())["services"]
    for name in ("us-client", "eu-client"):
        state = [v for v in regions[name]["volumes"] if v["source"] == "region-state"]
        assert [v["volume"]["subpath"] for v in state] == [name.removesuffix("-client")]


def defaults(environment: dict[str, object]) -> dict[str, str]:
    """What a compose environment sets when .env sets nothing: each ``${VAR:-default}``."""
    resolved = {}
    for key, value in environment.items():
        found = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", str(value))
        resolved[key] = found.group(2) if found else str(value)
    return resolved


def region_environment() -> dict[str, str]:
    return defaults(yaml.safe_load((ROOT / FILE).read_text())["x-region-env"])


POLICY = {
    "FLAME_POLICY_REQUIRE_DP": "true",
    "FLAME_POLICY_MAX_EPSILON": "3",
    "FLAME_POLICY_LIFETIME_EPSILON": "30",
    "FLAME_POLICY_MAX_DELTA": "1e-5",
    "FLAME_POLICY_EVAL_NOISE": "8",
    "FLAME_POLICY_HISTOGRAM_BINS": "25",
    "FLAME_POLICY_MAX_EVALUATIONS": "20",
    "FLAME_POLICY_ATTACKS": "none",
    "FLAME_TRUSTED_APPS": "image",
}


def test_the_compose_regions_and_a_remote_site_are_private_by_default() -> None:
    regions = region_environment()
    assert {k: regions[k] for k in POLICY} == POLICY
    site = yaml.safe_load((ROOT / "docker-compose.region.yml").read_text())["services"]["region"]
    assert {k: defaults(site["environment"])[k] for k in POLICY} == POLICY
    assert site["environment"]["FLAME_STATE_DIR"] == "/state"
    assert "region-state:/state" in site["volumes"]  # its own volume, kept across restarts
    raw = (ROOT / FILE).read_text() + (ROOT / "docker-compose.region.yml").read_text()
    for key in POLICY:  # every one a default a site's .env can change
        assert f"${{{key}:-" in raw


@pytest.mark.parametrize(
    ("rows", "rounds", "runs"),
    [(20_000, 3, 2), (80_000, 3, 2), (64_000, 8, 1)],  # compose-e2e's two runs; multihost's 8
)
def test_the_default_compose_run_is_one_the_default_regions_accept(
    rows: int, rounds: int, runs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run settings the launcher submits (its environment) against the regions' default
    policy, through the regions' own checks and ledger: the first-round check, then every
    release of whole runs (validation in each train message after the first, each round's
    DP-SGD, the final evaluation) charged as a region charges them; all accepted."""
    from flame.fl.client_app import dp_config, region_policy, training_plan
    from flame.fl.ledger import EVALUATE, TRAIN, Ledger, Release
    from flame.fl.privacy import charge, check_run, noise_multiplier

    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = defaults(main["services"]["launcher"]["environment"])
    run = {k: server[k] for k in ("FLAME_DP", "FLAME_DP_TARGET_EPSILON", "FLAME_DP_DELTA")}
    assert run == {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "1", "FLAME_DP_DELTA": "1e-5"}
    for key, value in (run | region_environment()).items():
        if key.startswith("FLAME_") and key != "FLAME_STATE_DIR":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLAME_NUM_SERVER_ROUNDS", str(rounds))
    settings = FlameSettings()  # what a region's task sees: the run's settings, its own policy
    policy = region_policy(settings)
    config, plan = dp_config(settings), training_plan(settings, rows)
    check_run(settings.dp, config, rows, plan, policy)  # every train task's first check
    rate = config.effective_rate(rows)
    sigma = noise_multiplier(config, rate, plan.total)
    with Ledger(tmp_path / "us") as ledger:
        for run_id in map(str, range(1, runs + 1)):
            releases = []
            for rnd in range(1, rounds + 1):
                if rnd > 1:  # the previous round's model, scored in this train message
                    releases.append((rnd, EVALUATE, policy.eval_noise, 1.0, 1))
                releases.append((rnd, TRAIN, sigma, rate, plan.steps))
            releases.append((rounds, EVALUATE, policy.eval_noise, 1.0, 1))  # the final one
            for rnd, kind, noise, q, steps in releases:
                release = Release(run_id, "", rnd, kind, noise, q, steps, config.delta)
                with ledger.charging() as charging:
                    epsilon, _ = charge(charging, release, policy)
            assert 1 < epsilon < policy.max_epsilon  # DP-SGD's ε=1 and the noisy answers


def test_the_generator_runs_with_plain_python(tmp_path: Path) -> None:
    script = ROOT / "flame" / "ops" / "compose_regions.py"
    proc = subprocess.run(
        [sys.executable, "-I", str(script), "us,eu,apac"], cwd=tmp_path, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert "written for us,eu,apac" in proc.stdout
    assert (tmp_path / FILE).read_text() == render(["us", "eu", "apac"])
    bad = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_flame_compose_regions_writes_the_file_for_flame_regions(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from flame.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLAME_REGIONS", "us,eu,apac")
    assert main(["compose-regions"]) == 0
    assert (tmp_path / FILE).read_text() == render(["us", "eu", "apac"])
    assert main(["compose-regions"]) == 0
    assert "already up to date for us,eu,apac" in capsys.readouterr().out


def _networks(service: dict[str, object]) -> set[str]:
    if service.get("network_mode") == "none":
        return set()
    return set(service.get("networks", ["default"]))  # type: ignore[arg-type]


def test_regions_share_a_network_with_the_gateway_only() -> None:
    """The segmentation as written (the compose test plays it against the real stack)."""
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = main["services"] | yaml.safe_load(render(["us", "eu", "apac"]))["services"]
    on = {name: _networks(service) for name, service in services.items()}
    regions = ("us", "eu", "apac")
    networks = main["networks"] | yaml.safe_load(render(list(regions)))["networks"]
    members = {net: {n for n, nets in on.items() if net in nets} for net in networks}
    scorers = {f"{r}-scorer" for r in regions}
    assert members == {
        "fleet": {"gateway", "us-client", "eu-client", "apac-client"},
        "control": {"superlink", "gateway", "serverapp", "launcher", "register"}
        | {f"{r}-register" for r in regions},
        "tracking": {"mlflow", "mlflow-accounts", "serverapp", "launcher"} | scorers,
    } | {f"{n}-port": {n} for n in ("superlink", "gateway", "mlflow", *sorted(scorers))} | {
        f"{r}-scoring": {f"{r}-scorer", f"{r}-redis"} for r in regions
    }  # a region's history: its scorer alone reaches its Redis
    internal = ("fleet", "control", "tracking", *(f"{r}-scoring" for r in regions))
    assert all(networks[n]["internal"] for n in internal)
    # a host port needs a network that is not internal: one per published service, alone on it
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"superlink", "gateway", "mlflow"} | scorers
    assert not [n for n in published if networks[f"{n}-port"]]  # none internal
    assert {n for n, nets in on.items() if not nets} == {
        "certs", "data-split", "state-folders", "us-key", "eu-key", "apac-key",
    }  # fmt: skip
    # SuperExec authentication: the secret only where Flower reads it
    secret = {n for n, s in services.items()
              if any((v["source"] if isinstance(v, dict) else v.split(":")[0]) == "superexec-secret"
                     for v in s.get("volumes", []))}  # fmt: skip
    assert secret == {"certs", "superlink", "serverapp"}
    assert "--superexec-auth-secret-file" in services["superlink"]["command"]
    assert "--superexec-auth-secret-file" in services["serverapp"]["command"]


def test_every_compose_service_has_a_memory_and_a_process_limit() -> None:
    site = yaml.safe_load((ROOT / "docker-compose.region.yml").read_text())["services"]
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    services = main | yaml.safe_load((ROOT / FILE).read_text())["services"] | site
    for name, service in services.items():
        assert re.fullmatch(r"\d+[mg]", service.get("mem_limit", "")), name
        assert isinstance(service.get("pids_limit"), int), name
    assert site["region"]["networks"] == ["site"]  # a remote site dials out on its own network


def test_each_region_scores_its_own_rows_with_its_own_history() -> None:
    """A scorer per region (issue 24): the champion's weights come from MLflow, the rows stay
    in the region; its history is its own Redis on its own volume, on a network with its
    scorer alone; scorers are published on 127.0.0.1:8081, :8082, ... (first region first)."""
    regions = ["us", "eu", "apac"]
    rendered = yaml.safe_load(render(regions))
    services = rendered["services"]
    for number, region in enumerate(regions):
        scorer, redis = services[f"{region}-scorer"], services[f"{region}-redis"]
        env = scorer["environment"]
        assert scorer["command"] == ["flame", "serve"]
        assert env["FLAME_REGION"] == region
        assert env["FLAME_HISTORY_URL"] == f"redis://{region}-redis:6379/0"
        assert env["FLAME_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["FLAME_MLFLOW_CREDENTIALS"] == "/secrets/mlflow-reader/credentials"
        assert env["FLAME_SERVE_HOST"] == "0.0.0.0"
        assert scorer["ports"] == [f"127.0.0.1:{8081 + number}:{env['FLAME_SERVE_PORT']}"]
        assert "fleet" not in scorer["networks"] and "control" not in scorer["networks"]
        assert set(scorer["networks"]) == {f"{region}-scoring", "tracking", f"{region}-scorer-port"}
        assert [(v["source"], v["read_only"]) for v in scorer["volumes"]] == [
            ("mlflow-reader", True)
        ]  # the reader's login only: no region data, no key, no ledger
        assert scorer["depends_on"][f"{region}-redis"] == {"condition": "service_healthy"}
        assert "mlflow-accounts" in scorer["depends_on"]
        assert redis["networks"] == [f"{region}-scoring"] and not redis.get("ports")
        assert redis["volumes"] == [f"{region}-history:/data"]
        assert redis["command"].split()[0] == "redis-server"
        for flag in ("--appendonly yes", "--dir /data", "--maxmemory-policy volatile-lru"):
            assert flag in redis["command"], flag
        assert rendered["networks"][f"{region}-scoring"] == {"internal": True}
        assert f"{region}-history" in rendered["volumes"]
        # the region's SuperNode stays on fleet only: it never meets its scorer or its Redis
        assert services[f"{region}-client"].get("networks", ["fleet"]) == ["fleet"]
    # the history volumes are each mounted by their region's Redis alone
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in (main | services).items():
        sources = [v["source"] if isinstance(v, dict) else v.split(":")[0]
                   for v in service.get("volumes", [])]  # fmt: skip
        held = {s for s in sources if s.endswith("-history")}
        assert held == ({name.removesuffix("-redis") + "-history"} if name.endswith("-redis")
                        else set()), name  # fmt: skip
    assert "scorer" not in main  # the coordinator scores no rows


def test_a_remote_site_scores_its_own_rows_beside_its_node() -> None:
    """docker-compose.region.yml: the site's scorer and Redis (profile scoring) read the
    champion from the coordinator's MLflow with the reader's login the coordinator hands over;
    the SuperNode shares no network with either, and Redis is on the scorer's network alone."""
    compose = yaml.safe_load((ROOT / "docker-compose.region.yml").read_text())
    site, networks = compose["services"], compose["networks"]
    scorer, redis = site["scorer"], site["redis"]
    assert scorer["profiles"] == redis["profiles"] == ["scoring"]
    assert "exec flame serve" in scorer["command"][-1]
    assert "FLAME_MLFLOW_TRACKING_URI:?" in scorer["command"][-1]  # from the site's .env
    assert scorer["environment"]["FLAME_HISTORY_URL"] == "redis://redis:6379/0"
    assert scorer["environment"]["FLAME_MLFLOW_CREDENTIALS"] == "/secrets/mlflow-reader/credentials"
    assert "./secrets/mlflow-reader:/secrets/mlflow-reader:ro" in scorer["volumes"]
    assert redis["networks"] == ["scoring"] and networks["scoring"] == {"internal": True}
    assert not set(scorer["networks"]) & set(site["region"]["networks"])
    assert redis["volumes"] == ["region-history:/data"] and "region-history" in compose["volumes"]
