from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from flame.settings import FlameSettings, SettingsError, env_example, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAME_REGIONS", "us, eu ,apac")
    monkeypatch.setenv("FLAME_HIDDEN_SIZES", "32,16")
    monkeypatch.setenv("FLAME_DROP_BALANCE_FEATURES", "false")
    monkeypatch.setenv("FLAME_ALERT_RATE", "0.01")
    settings = load_settings()
    assert settings.regions == ["us", "eu", "apac"]
    assert settings.hidden_sizes == [32, 16]
    assert not settings.drop_balance_features and settings.alert_rate == 0.01


def test_defaults_are_the_data_owners_model_and_an_alert_budget() -> None:
    settings = load_settings()
    assert settings.drop_balance_features  # the balance columns are opted into, not out of
    assert settings.alert_rate == 0.005 and settings.threshold == 0
    assert load_settings(alert_rate=0).alert_rate == 0  # 0: the F1-optimal threshold
    assert load_settings({"alert-rate": 0.02}).alert_rate == 0.02  # a run setting


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5", "x"])
def test_an_alert_rate_outside_0_to_1_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLAME_ALERT_RATE", value)
    with pytest.raises(SettingsError, match=r"^invalid setting: FLAME_ALERT_RATE: ") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_a_fixed_threshold_and_an_alert_budget_are_refused_together() -> None:
    with pytest.raises(SettingsError, match=r"FLAME_THRESHOLD=0\.7 and FLAME_ALERT_RATE=0\.005"):
        load_settings(threshold=0.7)
    assert load_settings(threshold=0.7, alert_rate=0).threshold == 0.7


def test_run_config_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAME_NUM_SERVER_ROUNDS", "7")
    assert load_settings().num_server_rounds == 7
    assert load_settings({"num-server-rounds": 2, "unknown-key": 1}).num_server_rounds == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLAME_TEST_FRACTION", "1.5"),
        ("FLAME_REGIONS", "us,us"),
        ("FLAME_LOCAL_EPOCHS", "x"),
        ("FLAME_SEED", "-1"),
    ],
)
def test_invalid_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_pyproject_run_config_matches_settings_defaults() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert config["components"] == {
        "serverapp": "flame.fl.server_app:app",
        "clientapp": "flame.fl.client_app:app",
    }
    defaults = FlameSettings.model_fields
    for key, value in config["config"].items():
        assert defaults[key.replace("-", "_")].default == value, key


def test_env_example_documents_every_setting_and_is_current() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "regenerate: python -m flame.settings > .env.example"
    for name in FlameSettings.model_fields:
        assert f"FLAME_{name.upper()}=" in text, name


def test_a_misspelt_variable_is_named_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flame import settings as fs

    monkeypatch.setenv("FLAME_AGGREGATOR", "krum")
    monkeypatch.setenv("FLAME_ROUNDS", "9")
    monkeypatch.setenv("FLAME_BASE_IMAGE", "python:3.11-slim")  # docker compose's, not ours
    monkeypatch.setattr(fs, "_warned", set())
    monkeypatch.setattr(logging.getLogger("flame"), "propagate", True)  # to caplog
    with caplog.at_level("WARNING", logger="flame.settings"):
        fs.load_settings()
    warned = [r.getMessage() for r in caplog.records]
    assert (
        "FLAME_AGGREGATOR is not a Flame setting and is ignored; did you mean "
        "FLAME_AGGREGATION?" in warned
    )
    assert any("FLAME_ROUNDS" in w and "FLAME_NUM_SERVER_ROUNDS" in w for w in warned)
    assert not any("FLAME_BASE_IMAGE" in w for w in warned)
    caplog.clear()
    fs.load_settings()  # once per process
    assert not caplog.records


def test_settings_that_cannot_work_are_refused_by_name() -> None:
    assert load_settings(regions="3").regions == ["region1", "region2", "region3"]
    with pytest.raises(SettingsError, match=r"FLAME_REGIONS: region names cannot be bare numbers"):
        load_settings(regions="2,x")
    with pytest.raises(SettingsError, match=r"FLAME_ADVERSARIAL_REGIONS names \['zz'\]"):
        load_settings(adversarial_regions="zz")
    with pytest.raises(SettingsError, match=r"krum needs more than .* FLAME_REGIONS has 2$"):
        load_settings(aggregation="krum")
    assert load_settings(aggregation="krum", regions="5").aggregation == "krum"
