from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from flame.settings import (
    CENTRAL_FIELDS,
    RUN_CONFIG_FIELDS,
    RUN_FIELDS,
    FlameSettings,
    SettingsError,
    env_example,
    load_settings,
    pyproject_config,
    run_config,
    run_config_defaults,
    server_settings,
    toml_value,
)

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


def test_pyproject_run_config_is_generated_from_the_settings() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    config = tomllib.loads(text)["tool"]["flwr"]["app"]
    assert config["components"] == {
        "serverapp": "flame.fl.server_app:app",
        "clientapp": "flame.fl.client_app:app",
    }
    assert pyproject_config() in text, "regenerate: python -m flame.settings --pyproject"
    assert config["config"] == run_config_defaults()
    # every run setting can be set by flwr run --run-config; no node setting can
    assert set(config["config"]) == {k.replace("_", "-") for k in RUN_FIELDS} | {"resume"}


def test_the_run_config_carries_a_run_whole() -> None:
    """Settings -> run config -> settings gives the same run, lists and unset values included."""
    sent = load_settings(
        regions=["a", "b", "c"], hidden_sizes=[8, 4], dp=True, dp_target_epsilon=2.0,
        adversarial_regions=["b"], num_server_rounds=9,
    )  # fmt: skip
    text = " ".join(f"{k}={toml_value(v)}" for k, v in run_config(sent).items())
    parsed = tomllib.loads("\n".join(text.split(" ")))
    got = load_settings(parsed)
    assert {f: getattr(got, f) for f in RUN_FIELDS} == {f: getattr(sent, f) for f in RUN_FIELDS}


def test_an_environment_the_run_config_overrides_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLAME_LOCAL_EPOCHS", "5")
    monkeypatch.setenv("FLAME_SEED", "42")  # the same as the run config: nothing to say
    monkeypatch.setattr(logging.getLogger("flame"), "propagate", True)  # to caplog
    with caplog.at_level("WARNING", logger="flame.settings"):
        settings = server_settings(run_config_defaults())
    assert settings.local_epochs == 2
    lines = {r.getMessage() for r in caplog.records if "FLAME_LOCAL_EPOCHS" in r.getMessage()}
    assert not any("FLAME_SEED" in r.getMessage() for r in caplog.records)
    assert lines == {"FLAME_LOCAL_EPOCHS=5 in this process's environment is ignored: the run "
                     "config says local-epochs=2 (set run settings with flame launch, which "
                     "reads .env, or flwr run --run-config)"}  # fmt: skip


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


@pytest.mark.parametrize(
    ("name", "value"),
    [("DP_TARGET_EPSILON", "inf"), ("LEARNING_RATE", "nan"), ("ROUND_TIMEOUT", "inf"),
     ("POLICY_MAX_EPSILON", "Infinity"), ("ATTACK_SCALE", "-inf"), ("DP_DELTA", "NaN")],
)  # fmt: skip
def test_a_number_that_is_not_finite_is_refused_where_it_is_read(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"FLAME_{name}", value)
    with pytest.raises(SettingsError, match=rf"^invalid setting: FLAME_{name}: .*finite") as err:
        load_settings()
    assert "\n" not in str(err.value) and len(str(err.value)) <= 200


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("ROUDNS", "NUM_SERVER_ROUNDS"), ("NUM_ROUNDS", "NUM_SERVER_ROUNDS"),
     ("LEARNIG_RATE", "LEARNING_RATE"), ("BATCHSIZE", "BATCH_SIZE"),
     ("DP_EPSILON", "DP_TARGET_EPSILON"), ("MLFLOW_URI", "MLFLOW_TRACKING_URI"),
     ("SEEDS", "SEED"), ("AGGREGATOR", "AGGREGATION"), ("REGOINS", "REGIONS")],
)  # fmt: skip
def test_a_typo_is_pointed_at_the_setting_a_person_meant(typo: str, meant: str) -> None:
    from flame.settings import unknown_variables

    (line,) = unknown_variables([f"FLAME_{typo}"])
    assert line.endswith(f"did you mean FLAME_{meant}?"), line


def test_a_dot_env_that_is_not_utf8_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"FLAME_SEED=3\n# caf\xe9 notes\nFLAME_NUM_SERVER_ROUNDS=2\n")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert ".env" in message and "line 2" in message and "UTF-8" in message, message
    assert "\n" not in message and len(message) <= 200


@pytest.mark.parametrize("uri", ["localhost:5000", "127.0.0.1:5000", "htp://mlflow:5000",
                                 "mlflow:5000/", "//mlflow:5000", "http//mlflow:5000"])  # fmt: skip
def test_a_tracking_uri_mlflow_cannot_use_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    monkeypatch.setenv("FLAME_MLFLOW_TRACKING_URI", uri)
    with pytest.raises(SettingsError, match=r"^invalid setting: FLAME_MLFLOW_TRACKING_URI: ") as e:
        load_settings()
    assert "http://" in str(e.value) and len(str(e.value)) <= 200


@pytest.mark.parametrize("uri", ["", "http://mlflow:5000", "https://ml.example.com/",
                                 "sqlite:////tmp/m.db", "file:///tmp/mlruns",
                                 "postgresql://u:p@db/mlflow"])  # fmt: skip
def test_a_tracking_uri_mlflow_can_use_is_kept(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("FLAME_MLFLOW_TRACKING_URI", uri)
    assert load_settings().mlflow_tracking_uri == uri


def test_every_run_setting_is_a_flag_of_main_py_and_flame_baseline_has_its_own() -> None:
    """The flags come from the settings' fields: a run knob added to the settings is a flag of
    main.py, with its choices, and a flag's value is the setting's value; flame baseline (central
    training) has the flags of what it reads, and refuses a federated one it would ignore."""
    from flame.cli import parser
    from main import parse

    baseline = parser().parse_args
    common = ["--rounds", "4", "--hidden-sizes", "8,4", "--regions", "a,b,c", "--seed", "3"]
    federated = ["--dp-target-epsilon", "2", "--codec", "int8", "--dp", "true"]
    for args, fields in ((vars(parse(common + federated)), RUN_CONFIG_FIELDS),
                         (vars(baseline(["baseline", *common])), CENTRAL_FIELDS)):  # fmt: skip
        given = {k: v for k, v in args.items() if k in fields and v is not None}
        settings = load_settings(**given)
        assert (settings.num_server_rounds, settings.hidden_sizes, settings.seed) == (4, [8, 4], 3)
        assert settings.regions == ["a", "b", "c"]
        assert all(args[f] is None for f in set(fields) - set(given))  # the rest: .env's
    settings = load_settings(**{k: v for k, v in vars(parse(federated)).items() if v is not None})
    assert (settings.dp_target_epsilon, settings.codec, settings.dp) == (2.0, "int8", True)
    for bad in (["--codec", "gzip"], ["--dp", "yes"]):
        with pytest.raises(SystemExit):
            parse(bad)
    with pytest.raises(SystemExit):
        baseline(["baseline", "--dp", "true"])  # central training has no DP: not a flag


def test_runs_started_in_the_same_second_get_folders_of_their_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`flame baseline` then `python main.py` within one second: the second run took the
    first's folder and was refused as "holds an earlier run" (CI, 2026-12-04)."""
    import datetime as dt

    import flame.settings as fs

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Frozen:
            return cls(2026, 12, 4, 18, 27, 39)

    monkeypatch.setattr(fs, "datetime", Frozen)
    settings = load_settings(runs_dir=tmp_path / "runs")
    folders = [settings.resolved_out_dir() for _ in range(3)]
    stamp = "20261204-182739"
    assert [f.name for f in folders] == [stamp, f"{stamp}-2", f"{stamp}-3"]
    assert all(f.is_dir() for f in folders)
    assert load_settings(out_dir=tmp_path / "mine").resolved_out_dir() == tmp_path / "mine"


def test_a_runs_folder_that_cannot_hold_runs_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for runs in (tmp_path / "file", tmp_path / "dangling"):
        with pytest.raises(SettingsError, match=f"FLAME_RUNS_DIR {runs} is not"):
            load_settings(runs_dir=runs).resolved_out_dir()
