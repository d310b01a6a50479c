from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from flame.ops.compose_regions import FILE, render
from flame.settings import FlameSettings

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_regions_file_is_the_template_for_the_default_regions() -> None:
    default = FlameSettings.model_fields["regions"].default
    assert (ROOT / FILE).read_text() == render(default)
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert str(FILE) in main["include"]
    assert not [s for s in main["services"] if s.endswith("-client")]  # regions live there only


def test_a_third_region_is_a_service_that_sees_only_its_own_folders() -> None:
    services = yaml.safe_load(render(["us", "eu", "apac"]))["services"]
    assert list(services) == ["us-client", "eu-client", "apac-client"]
    apac = services["apac-client"]
    assert apac["environment"]["FLAME_REGION"] == "apac"
    mounts = {m["source"]: m for m in apac["volumes"]}
    assert mounts["region-data"]["volume"]["subpath"] == "apac"
    assert mounts["certs-regions"]["volume"]["subpath"] == "apac"
    assert mounts["certs-regions"]["read_only"] is True
    assert "gateway:9443" in apac["command"] and "register" in apac["depends_on"]


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
