"""Every Flame setting, defined once, by concern. Read from the environment (prefix ``FLAME_``)
and ``.env``; one ``FlameSettings`` composes the concerns under the same ``FLAME_*`` names.

Every run setting is a key of Flower's run config (``[tool.flwr.app.config]`` in
``pyproject.toml``, generated from these classes: ``python -m flame.settings --pyproject``), so
``flwr run --run-config`` sets any of them; on the ServerApp the run config wins over its
environment, and each setting it overrides is named.
Each setting reaches the code by one route: run settings (data, training, privacy, updates,
robustness) are the run's run config, which Flower hands the ServerApp and every ClientApp;
node settings come from each machine's own environment.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, get_args, get_origin

from dotenv import dotenv_values
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flame.data.spec import DataSpec

log = logging.getLogger("flame.settings")

KAGGLE_FILE = Path("data/PS_20174392719_1491204439457_log.csv")
ENV_FILE = Path(".env")
# what MLflow's tracking and registry stores accept (http(s) servers, its SQL and file stores)
TRACKING_SCHEMES = frozenset(
    {"http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks"}
)


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting."""


class DataSettings(BaseModel):
    """The data a run trains on and how it is split into regions and the test set (run)."""

    synth_rows: int = Field(200_000, ge=100, description="Rows of synthetic PaySim.")
    synth_fraud_rate: float = Field(0.00129, gt=0, lt=0.5, description="Synthetic fraud share.")
    seed: int = Field(
        42, ge=0, le=2**32 - 1, description="Seed for data generation, partitioning and training."
    )
    regions: Annotated[list[str], NoDecode] = Field(
        default=["us", "eu"], description="Comma-separated region names, one per SuperNode."
    )
    partitioning: Literal["customer", "non-iid"] = Field(
        "customer", description="customer: hash of nameOrig; non-iid: regions differ in type mix."
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Server-held test share.")
    split: Literal["hash", "time"] = Field(
        "hash", description="Server test set: a hash of nameOrig, or time = the last "
        "FLAME_TEST_FRACTION of steps (regions train on earlier steps).",
    )  # fmt: skip
    drop_balance_features: bool = Field(
        True, description="Leave out the four balance columns, as the data's owner asks "
        "(fraudulent transactions are cancelled, so they leak the label); false = keep them "
        "(--with-balances).",
    )  # fmt: skip


class TrainingSettings(BaseModel):
    """The model and how it is trained and selected (run)."""

    num_server_rounds: int = Field(3, ge=1, description="Federated rounds.")
    fraction_train: float = Field(
        1.0, gt=0, le=1, description="Share of regions trained per round."
    )
    fraction_evaluate: float = Field(
        1.0, ge=0, le=1, description="Share of regions evaluated per round."
    )
    evaluate_in_train: bool = Field(
        True, description="One message per region per round: a region scores the model it "
        "receives on its validation rows before training it and replies with both; only the "
        "final model gets a separate evaluate message. Same metrics (the row for round r is "
        "still the model after round r, logged when round r+1's replies are in); false = a "
        "train and an evaluate message every round.",
    )  # fmt: skip
    local_epochs: int = Field(
        2, ge=1, description="Passes over a region's rows per round (when that is more steps "
        "than FLAME_MIN_LOCAL_STEPS).",
    )  # fmt: skip
    min_local_steps: int = Field(
        100, ge=1, description="Fewest optimiser steps a region takes per round (small data).",
    )  # fmt: skip
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate (peak).")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning rate over the whole run's steps.",
    )  # fmt: skip
    batch_size: int = Field(256, ge=1, description="Mini-batch size.")
    hidden_sizes: Annotated[list[int], NoDecode] = Field(
        default=[], description="Comma-separated MLP hidden layer widths; empty = 64,32, or 32,16 "
        "with FLAME_DP (fewer weights, less noise per weight).",
    )  # fmt: skip
    pos_weight: float = Field(
        0.0, ge=0, description="BCE pos_weight; 0 = sqrt(neg/pos) of the local training data."
    )
    threshold: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Decision threshold; 0 = chosen on the pooled client validation scores "
        "(for FLAME_ALERT_RATE, else F1-optimal).",
    )
    alert_rate: float = Field(
        0.005, ge=0, lt=1, description="Alert budget: the share of transactions a region's "
        "analysts can review; the threshold is the one whose pooled validation alert rate is "
        "closest to it, and every round reports precision and recall at it. 0 = the "
        "F1-optimal threshold.",
    )  # fmt: skip
    pretrain_rows: int = Field(
        300_000, ge=0, description="Warm start: the initial model is trained on this many "
        "synthetic PaySim rows (public data: no region's rows, no privacy cost); 0 = random "
        "initial weights.",
    )  # fmt: skip
    model_selection: Literal["best-val", "last"] = Field(
        "best-val", description="Saved model: the latest round within one standard error of "
        "the best pooled client validation PR-AUC (never the server's test set), or the last "
        "round.",
    )  # fmt: skip
    min_regions: int = Field(
        1, ge=1,
        description="Fewest regions a round proceeds with; lost regions are skipped, not awaited.",
    )  # fmt: skip
    join_timeout: float = Field(
        120.0, ge=0, description="Seconds the first round waits for every region to connect."
    )
    round_timeout: float = Field(
        900.0, gt=0, description="Seconds a train/evaluate phase waits for replies."
    )


DP_SUBSPACE, SUBSPACE_CLIP = 8, 0.1  # the public subspace's default size and clipping norm


class PrivacySettings(BaseModel):
    """DP-SGD on every region's local training (run)."""

    dp: bool = Field(False, description="DP-SGD (Opacus) on every region's local training.")
    dp_noise_multiplier: float | None = Field(
        None, ge=0, description="DP-SGD noise multiplier; unset = derive from "
        "FLAME_DP_TARGET_EPSILON; 0 = clipping only, no privacy (ε = inf; an ablation).",
    )  # fmt: skip
    dp_target_epsilon: float = Field(
        0.0, ge=0, description="Whole-run ε budget per region; 0 = no budget (needs noise > 0)."
    )
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="DP δ.")
    dp_max_grad_norm: float | None = Field(
        None, gt=0, description="DP-SGD per-sample clipping norm; unset = 0.1 in a public "
        "subspace (FLAME_DP_SUBSPACE), 1.0 on every weight.",
    )  # fmt: skip
    dp_optimizer: Literal["adam", "adambc", "sgd"] = Field(
        "adam", description="DP optimiser; adambc: Adam with the DP noise's variance taken out "
        "of its second moment (DP-AdamBC).",
    )  # fmt: skip
    dp_adambc_floor: float = Field(
        1e-8, ge=0, description="adambc: floor of the noise-corrected second moment (γ').",
    )  # fmt: skip
    dp_learning_rate: float = Field(2e-2, gt=0, description="DP optimiser learning rate (peak).")
    dp_batch_size: int = Field(
        1024, ge=1, description="Expected logical batch of DP steps (sampling rate = this / rows)."
    )
    dp_sample_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Poisson sampling rate of DP steps; 0 = from FLAME_DP_BATCH_SIZE.",
    )
    dp_subspace: int | None = Field(
        None, ge=0, description="DP-SGD trains only this many coordinates: the top directions "
        "of public (synthetic) rows' per-sample gradients at the round's global model; 0 = every "
        "weight; unset = 8 for a warm-started model without the balance columns, else 0.",
    )  # fmt: skip


class UpdateSettings(BaseModel):
    """What travels from a region to the server: compression and update noise (run)."""

    codec: Literal["none", "fp16", "int8", "topk"] = Field(
        "none", description="Client->server update compression."
    )
    topk_ratio: float = Field(0.1, gt=0, le=1, description="topk: share of entries sent.")
    update_noise: float = Field(
        0.0, ge=0, description="Gaussian noise multiplier on the clipped, aggregated updates "
        "(server side, Flower's fixed-clipping DP wrapper); 0 = off. Not DP-SGD.",
    )  # fmt: skip
    update_clip: float = Field(1.0, gt=0, description="Update clipping norm for update noise.")


class RobustnessSettings(BaseModel):
    """Robust aggregation and simulated adversarial regions (run)."""

    aggregation: Literal["fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum"] = Field(
        "fedavg", description="Aggregation rule (Flower built-ins)."
    )
    trim_beta: float = Field(0.2, gt=0, lt=0.5, description="FedTrimmedAvg: share cut per side.")
    num_malicious: int = Field(1, ge=0, description="Krum/MultiKrum: attackers to tolerate.")
    adversarial_regions: Annotated[list[str], NoDecode] = Field(
        default=[], description="Comma-separated regions that attack (simulation)."
    )
    attack: Literal["label_flip", "sign_flip", "scale", "random"] = Field(
        "sign_flip", description="What adversarial regions do to their update."
    )
    attack_scale: float = Field(10.0, gt=0, description="Attack strength (update multiplier).")


class NodeSettings(BaseModel):
    """This machine: where its data, cache and peers are, and its processes (node)."""

    data_path: Path | None = Field(
        None,
        description="PaySim CSV file or folder of CSVs. Unset: the Kaggle file at "
        f"{KAGGLE_FILE} when present, else synthetic data.",
    )
    cache_dir: Path = Field(
        Path("data/cache"), description="Prepared partitions (.npy features per region)."
    )
    test_path: Path | None = Field(
        None,
        description="Server test set, Parquet or PaySim CSV (deployment); unset = from the cache.",
    )
    superlink: str = Field(
        "superlink:8000", description="SuperLink address host:port (launcher, stand-alone region)."
    )
    region: str = Field("", description="This site's region name (stand-alone region compose).")
    tls_sans: Annotated[list[str], NoDecode] = Field(
        default=[], description="Extra DNS names/IPs for the SuperLink certificate (flame certs)."
    )
    torch_threads: int = Field(1, ge=1, description="torch.set_num_threads per process.")
    warm_clientapp: bool = Field(
        True, description="flame supernode: fork each ClientApp task from a warm launcher that "
        "imported Flower, torch and Flame once (a fresh process per task still); false = "
        "Flower's cold start per message.",
    )  # fmt: skip
    poll_interval: float = Field(
        0.25, ge=0.01, le=3.0,
        description="Deployment: cap (s) on Flower's idle polling sleeps (Flower's own: 3 s).",
    )  # fmt: skip
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of this region's rows it holds out for validation "
        "(a node setting: the region, not the server, fixes its validation rows).",
    )  # fmt: skip
    state_dir: Path = Field(
        Path("data/state"), description="This node's private state: one sub-folder per region "
        "with its secret noise seed and its privacy ledger. Never leaves the region.",
    )  # fmt: skip
    commands_dir: Path | None = Field(
        None, description="flame supernode: a folder of Flame's task commands to put first on "
        "the PATH of the node's task processes (the image bakes one: its /tmp cannot run "
        "programs); unset = written at start into a fresh temporary folder.",
    )  # fmt: skip
    app_hash: str = Field(
        "", description="Set by Flame's ClientApp launcher: the FAB hash of the app a task "
        "runs (recorded in the privacy ledger); empty in simulation.",
    )  # fmt: skip


class PolicySettings(BaseModel):
    """A region's own limits on what a run may do with its data (node; a run cannot change them)."""

    trusted_apps: Annotated[list[str], NoDecode] = Field(
        default=[], description="Region: FAB hashes (flame fab-hash) whose code may run on this "
        "region's data; 'image' = the app folder this node runs in; empty = any app.",
    )  # fmt: skip
    policy_require_dp: bool = Field(
        False, description="Region policy: refuse to train a run without DP-SGD."
    )
    policy_max_epsilon: float = Field(
        0.0, ge=0, description="Region policy: largest whole-run ε it trains for; 0 = any."
    )
    policy_max_delta: float = Field(
        0.0, ge=0, lt=1, description="Region policy: largest δ it trains for; 0 = at most "
        "1/rows (also the δ of the lifetime budget; 0 = the smallest δ in its ledger).",
    )  # fmt: skip
    policy_lifetime_epsilon: float = Field(
        0.0, ge=0, description="Region policy: total ε its ledger may ever spend, over every "
        "run and restart; 0 = no lifetime cap.",
    )  # fmt: skip
    policy_max_evaluations: int = Field(
        0, ge=0, description="Region policy: most evaluation answers per run (evaluate "
        "messages and validation in train messages); 0 = any.",
    )  # fmt: skip
    policy_histogram_bins: Literal[1600, 800, 400, 200, 100, 50, 25] = Field(
        1600, description="Region policy: finest score histogram an evaluation answer carries."
    )
    policy_eval_noise: float = Field(
        0.0, ge=0, description="Region policy: Gaussian noise (std, in rows) on evaluation "
        "histograms, charged to the ledger; every figure is derived from them. 0 = exact "
        "answers (not covered by ε); with FLAME_POLICY_REQUIRE_DP it must be above 0.",
    )  # fmt: skip
    policy_amount_clip: float = Field(
        0.0, ge=0, description="Region policy: a privatized evaluation answer carries the "
        "per-bin sums of its fraud rows' amounts, each amount clipped to this, with the same "
        "Gaussian noise (the answer is charged as two releases); 0 = privatized answers carry "
        "no amount sums. Exact answers carry exact sums.",
    )  # fmt: skip
    policy_codecs: Annotated[list[Literal["none", "fp16", "int8", "topk"]], NoDecode] = Field(
        default=[], description="Region policy: comma-separated update codecs it sends; "
        "empty = any.",
    )  # fmt: skip
    policy_attacks: Annotated[
        list[Literal["none", "label_flip", "sign_flip", "scale", "random"]], NoDecode
    ] = Field(
        default=[], description="Region policy: comma-separated attacks a run may make it "
        "simulate; none = never act as an adversary; empty = any (simulation).",
    )  # fmt: skip


class TrackingSettings(BaseModel):
    """Where a run's results go: run folder, CSV, TensorBoard, MLflow (server)."""

    runs_dir: Path = Field(Path("runs"), description="Parent of runs/<timestamp>.")
    out_dir: Path | None = Field(None, description="Run folder; unset = runs/<timestamp>.")
    resume: bool = Field(
        False,
        description="Continue FLAME_OUT_DIR (else the newest run with a checkpoint) after its "
        "last completed round.",
    )
    csv: bool = Field(
        True,
        description="Write runs/<ts>/metrics.csv (always written when FLAME_MLFLOW is on: "
        "MLflow is synced from it).",
    )
    tensorboard: bool = Field(
        True, description="Write TensorBoard scalars to runs/<ts>/tensorboard."
    )
    mlflow: bool = Field(True, description="Log to MLflow (skipped with a warning if unreachable).")
    flower_dumps: bool = Field(
        False, description="Show Flower's per-round record dumps in the ServerApp's log "
        "(main.py --verbose); warnings always show.",
    )  # fmt: skip
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking URI; unset = the local server http://127.0.0.1:5000 if "
        "it answers (make mlflow-ui), else the embedded store in ./mlflow-data, which "
        "make mlflow-ui shows.",
    )  # fmt: skip
    mlflow_credentials: Path | None = Field(
        None, description="File holding this process's MLflow login, in MLflow's credentials "
        "format ([mlflow] mlflow_tracking_username, mlflow_tracking_password); read once at "
        "start. Compose: each service's own file, made by flame mlflow-accounts. Unset = no "
        "login (an unauthenticated server).",
    )  # fmt: skip
    mlflow_public_url: str = Field(
        "", description="MLflow UI address in the links Flame prints (e.g. http://localhost:5000 "
        "when the tracking URI is a container name); unset = the tracking URI.",
    )  # fmt: skip
    mlflow_experiment: str = Field("flame", description="MLflow experiment name.")
    mlflow_register: bool = Field(
        True, description="Register each finished run's model in the MLflow Model Registry "
        "(the alias 'champion' moves to it only if its test PR-AUC beats the champion's).",
    )  # fmt: skip
    mlflow_model_name: str = Field(
        "flame-fraud", min_length=1, description="MLflow registered model name."
    )


class ServingSettings(BaseModel):
    """flame serve, the scoring service (node)."""

    serve_host: str = Field("127.0.0.1", description="flame serve: address to listen on.")
    serve_port: int = Field(8080, ge=1, le=65535, description="flame serve: port.")
    serve_reload: float = Field(
        30.0, gt=0, description="flame serve: seconds between looks at the champion alias."
    )
    serve_max_rows: int = Field(10_000, ge=1, description="flame serve: most rows per request.")
    history_url: str = Field(
        "", description="flame serve: the region's transaction history store, "
        "redis://host:port/db; empty = SQLite in FLAME_STATE_DIR/<region>/history.sqlite3; "
        "memory:// = this process only (benchmarks, tests)."
    )  # fmt: skip
    history_ttl: int = Field(
        35 * 24 * 3600, ge=60, description="flame serve: seconds a payee's history is kept after "
        "its last transaction (35 days: longer than PaySim's 743 hourly steps)."
    )  # fmt: skip


class FlameSettings(
    ServingSettings, TrackingSettings, PolicySettings, NodeSettings, RobustnessSettings,
    UpdateSettings, PrivacySettings, TrainingSettings, DataSettings, BaseSettings,
):  # fmt: skip
    """Every setting, composed from the concerns above (fields in the order listed there)."""

    model_config = SettingsConfigDict(
        env_prefix="FLAME_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
        allow_inf_nan=False,
    )

    @field_validator(
        "data_path", "test_path", "out_dir", "dp_noise_multiplier", "dp_max_grad_norm",
        "dp_subspace", "mlflow_credentials", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator(
        "adversarial_regions",
        "tls_sans",
        "trusted_apps",
        "policy_codecs",
        "policy_attacks",
        mode="before",
    )
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and len(value) == 1 and str(value[0]).isdigit():
            value = [f"region{i}" for i in range(1, int(value[0]) + 1)]  # "3": three regions
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("need one or more distinct region names, e.g. 'us,eu' (or a count)")
        if any(str(v).isdigit() for v in value or []):
            raise ValueError(f"region names cannot be bare numbers, got {value}")
        bad = [v for v in value or [] if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", str(v))]
        if bad:
            raise ValueError(f"region names are letters, digits, - and _ only; got {bad}")
        return value

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str) -> str:
        scheme = value.partition(":")[0].lower() if re.match(r"[A-Za-z][\w+.-]*:", value) else ""
        if value and (scheme not in TRACKING_SCHEMES or not re.match(r"[\w+.-]+:/", value)):
            raise ValueError(
                f"{value!r} is no tracking URI MLflow can use: give http://host:port, "
                "https://..., sqlite:///path or file:///path"
            )
        return value

    @field_validator("policy_histogram_bins", mode="before")
    @classmethod
    def _bins_from_text(cls, value: Any) -> Any:
        # an integer Literal takes no string: from the environment or .env, "25" is 25
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("hidden_sizes", mode="before")
    @classmethod
    def _split_sizes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [int(v) for v in value.split(",") if v.strip()]
        if any(int(v) < 1 for v in value):
            raise ValueError(f"hidden layer widths must be 1 or more, got {value}")
        return value

    @model_validator(mode="after")
    def _default_model(self) -> FlameSettings:
        if not self.hidden_sizes:
            self.hidden_sizes = [32, 16] if self.dp else [64, 32]
        return self

    @model_validator(mode="after")
    def _dp_needs_noise(self) -> FlameSettings:
        if self.dp and self.dp_noise_multiplier is None and self.dp_target_epsilon == 0:
            raise ValueError(
                "FLAME_DP needs FLAME_DP_NOISE_MULTIPLIER or FLAME_DP_TARGET_EPSILON > 0"
            )
        if self.dp_subspace and not self.dp:
            raise ValueError("FLAME_DP_SUBSPACE needs FLAME_DP=true: it is how DP-SGD trains")
        return self

    @model_validator(mode="after")
    def _default_dp_recipe(self) -> FlameSettings:
        # measured (docs/privacy-and-robustness.md): the subspace helps from the warm start
        # without the balance columns, and hurts from random weights
        if self.dp_subspace is None:
            warm = self.dp and self.pretrain_rows > 0 and self.drop_balance_features
            self.dp_subspace = DP_SUBSPACE if warm else 0
        if self.dp_max_grad_norm is None:
            self.dp_max_grad_norm = SUBSPACE_CLIP if self.dp_subspace else 1.0
        return self

    @model_validator(mode="after")
    def _private_evaluation(self) -> FlameSettings:
        guards = self.policy_require_dp or self.policy_max_epsilon or self.policy_lifetime_epsilon
        if guards and self.policy_eval_noise == 0:
            raise ValueError(
                "FLAME_POLICY_REQUIRE_DP, FLAME_POLICY_MAX_EPSILON and "
                "FLAME_POLICY_LIFETIME_EPSILON need FLAME_POLICY_EVAL_NOISE > 0: a region that "
                "guards its privacy privatizes every evaluation answer and charges it (e.g. 8)"
            )
        return self

    @model_validator(mode="after")
    def _attack_needs_regions(self) -> FlameSettings:
        if strangers := [r for r in self.adversarial_regions if r not in self.regions]:
            raise ValueError(
                f"FLAME_ADVERSARIAL_REGIONS names {strangers}, which are not in FLAME_REGIONS "
                f"{self.regions}"
            )
        n, f = len(self.regions), self.num_malicious
        if self.aggregation in ("krum", "multikrum") and n <= 2 * f + 2:
            raise ValueError(
                f"FLAME_AGGREGATION={self.aggregation} needs more than 2 x FLAME_NUM_MALICIOUS + 2 "
                f"= {2 * f + 2} regions; FLAME_REGIONS has {n}"
            )
        return self

    @model_validator(mode="after")
    def _one_threshold_rule(self) -> FlameSettings:
        if self.threshold and self.alert_rate:
            raise ValueError(
                f"FLAME_THRESHOLD={self.threshold:g} and FLAME_ALERT_RATE={self.alert_rate:g} "
                "both choose the threshold: set FLAME_ALERT_RATE=0 to fix it"
            )
        return self

    @model_validator(mode="after")
    def _noise_needs_plain_updates(self) -> FlameSettings:
        if self.update_noise > 0 and self.codec != "none":
            raise ValueError("FLAME_UPDATE_NOISE needs FLAME_CODEC=none (it clips full weights)")
        return self

    def learning_knobs(self) -> str:
        """The settings to lower first when training diverges, with their values."""
        if self.dp:
            return (f"FLAME_DP_LEARNING_RATE (now {self.dp_learning_rate:g}) or "
                    f"FLAME_DP_MAX_GRAD_NORM (now {self.dp_max_grad_norm:g})")  # fmt: skip
        return f"FLAME_LEARNING_RATE (now {self.learning_rate:g})"

    def resolved_out_dir(self) -> Path:
        """FLAME_OUT_DIR, else a new folder under FLAME_RUNS_DIR named for the time and made
        here, so that a second run started in the same second gets its own (``-2``, ``-3``)."""
        if self.out_dir:
            return self.out_dir
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            folder = self.runs_dir / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                folder.mkdir(parents=True)
            except FileExistsError:
                if folder.exists():
                    continue
                raise SettingsError(f"FLAME_RUNS_DIR {self.runs_dir} is not a folder") from None
            except OSError as err:
                raise SettingsError(
                    f"FLAME_RUNS_DIR {self.runs_dir} is not writable: {err.strerror}"
                ) from None
            return folder
        raise SettingsError(f"FLAME_RUNS_DIR {self.runs_dir}: 999 runs started at {stamp}")

    def data_source(self) -> Path | None:
        """The PaySim file/folder to use, or None for synthetic data."""
        if self.data_path is not None:
            return self.data_path
        return KAGGLE_FILE if KAGGLE_FILE.exists() else None

    def data_spec(self) -> DataSpec:
        """What ``flame/data`` needs of these settings: the data, its split and the cache."""
        return DataSpec(
            source=self.data_source(), synth_rows=self.synth_rows,
            synth_fraud_rate=self.synth_fraud_rate, seed=self.seed, regions=tuple(self.regions),
            partitioning=self.partitioning, split=self.split, test_fraction=self.test_fraction,
            val_fraction=self.val_fraction, drop_balance_features=self.drop_balance_features,
            cache_dir=self.cache_dir, test_path=self.test_path,
        )  # fmt: skip


# The two routes. Run settings are the run's: Flower's run config, the same for the ServerApp and
# every ClientApp (so a region's .env holds only its node settings). Node settings come from
# each machine's own environment, never from a run config or the server.
RUN_CONCERNS = (DataSettings, TrainingSettings, PrivacySettings, UpdateSettings, RobustnessSettings)
RUN_FIELDS = frozenset(f for concern in RUN_CONCERNS for f in concern.model_fields)
NODE_ONLY = frozenset(NodeSettings.model_fields) | frozenset(PolicySettings.model_fields)
# Flower's run config: every run setting, and the server's per-run resume switch
RUN_CONFIG_FIELDS = (*(f for c in RUN_CONCERNS for f in c.model_fields), "resume")
ConfigValue = bool | int | float | str
CONCERNS = (*RUN_CONCERNS, NodeSettings, PolicySettings, TrackingSettings, ServingSettings)


# FLAME_* names read by docker compose and the scripts, not by Flame
NOT_SETTINGS = frozenset(
    {"FLAME_BASE_IMAGE", "FLAME_PIP_SOURCE", "FLAME_GATEWAY_BIND", "FLAME_E2E_PROJECT",
     "FLAME_WARM_SOCKET", "FLAME_REAL_DATA_DIR",
     "FLAME_E2E_LOG", "FLAME_MH_PROJECT", "FLAME_MH_LOG", "FLAME_HISTORY_MAXMEMORY",
     "FLAME_SCORER_PORT"}
)  # fmt: skip
_warned: set[str] = set()


def unknown_variables(names: Iterable[str]) -> list[str]:
    """A line for each ``FLAME_*`` name that is no setting (a typo is otherwise silently
    ignored), with the closest setting's name."""
    known = [k.upper() for k in FlameSettings.model_fields]
    lines = []
    for name in sorted({n.upper() for n in names if n.upper().startswith("FLAME_")}):
        if name[6:] in known or name in NOT_SETTINGS:
            continue
        lines.append(f"{name} is not a Flame setting and is ignored{_hint(name[6:], known)}")
    return lines


def _hint(word: str, known: list[str]) -> str:
    """The setting ``word`` is closest to, comparing it with each setting's name and with
    the name's tails (ROUDNS -> ROUNDS -> NUM_SERVER_ROUNDS) and its words without the
    underscores (BATCHSIZE -> BATCH_SIZE); ties go to the shorter name."""
    best, name = max((_likeness(word, k), -len(k), k) for k in known)[::2]
    return f"; did you mean FLAME_{name}?" if best >= 0.6 else ""


def _likeness(word: str, setting: str) -> float:
    parts = setting.split("_")
    forms = {"_".join(parts[i:]) for i in range(len(parts))} | {setting.replace("_", "")}
    forms |= {"_".join(p for p in parts if p != drop) for drop in parts}  # DP_EPSILON
    whole = difflib.SequenceMatcher(None, word, setting).ratio()
    return max([whole] + [difflib.SequenceMatcher(None, word, f).ratio() - 0.01 for f in forms])


def check_env_file(path: Path = ENV_FILE) -> None:
    """A SettingsError naming the line of ``path`` that is not UTF-8 text (python-dotenv's
    codec error names neither the file nor the line)."""
    if not path.is_file():
        return
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SettingsError(
                f"{path} line {number}: byte 0x{line[err.start]:02x} at column {err.start + 1} "
                "is not UTF-8 text; save the file as UTF-8"
            ) from None


def _warn_unknown_variables() -> None:
    check_env_file()
    names = set(os.environ) | (set(dotenv_values(ENV_FILE)) if ENV_FILE.is_file() else set())
    for line in unknown_variables(names - _warned):
        log.warning(line)
    _warned.update(names)


def load_settings(run_config: dict[str, Any] | None = None, **overrides: Any) -> FlameSettings:
    """Settings from env/.env, then Flower run config (except NODE_ONLY), then overrides."""
    _warn_unknown_variables()
    values = {k.replace("-", "_"): v for k, v in (run_config or {}).items()}
    values = {k: v for k, v in values.items() if k not in NODE_ONLY}
    values.update(overrides)
    known = set(FlameSettings.model_fields)
    try:
        return FlameSettings(**{k: v for k, v in values.items() if k in known})
    except ValidationError as err:
        problems = "; ".join(
            (f"FLAME_{str(e['loc'][0]).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise SettingsError(f"invalid setting: {problems}") from None


def config_value(value: Any) -> ConfigValue:
    """A setting's value as Flower's run config holds it: lists comma-joined, unset empty."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if value is None:
        return ""
    return str(value) if isinstance(value, Path) else value


def config_key(field: str) -> str:
    return field.replace("_", "-")


def run_config_defaults() -> dict[str, ConfigValue]:
    """``[tool.flwr.app.config]``: every run setting's default, under its run-config key."""
    fields = FlameSettings.model_fields
    return {config_key(f): config_value(fields[f].get_default(call_default_factory=True))
            for f in RUN_CONFIG_FIELDS}  # fmt: skip


def run_config(settings: FlameSettings) -> dict[str, ConfigValue]:
    """The run config that makes a run of ``settings`` (what ``flame launch`` submits)."""
    return {config_key(f): config_value(getattr(settings, f)) for f in RUN_CONFIG_FIELDS}


def overridden_by_run_config(run_config: dict[str, Any], env: dict[str, str]) -> list[str]:
    """A line for each run setting this process's environment sets to another value than the
    run config, which wins (a run's settings are its run config, never the server's .env)."""
    known = set(RUN_CONFIG_FIELDS)
    lines = []
    for name, text in sorted(env.items()):
        field = name.upper().removeprefix("FLAME_").lower()
        key = config_key(field)
        if not name.upper().startswith("FLAME_") or field not in known or key not in run_config:
            continue
        if _resolved(field, text) != _resolved(field, run_config[key]):
            lines.append(f"{name.upper()}={text} in this process's environment is ignored: the run "
                         f"config says {key}={run_config[key]!r} (set run settings with flame "
                         "launch, which reads .env, or flwr run --run-config)")  # fmt: skip
    return lines


def _resolved(field: str, value: object) -> object:
    try:
        return load_settings(**{field: value}).model_dump()[field]
    except SettingsError:
        return None


def pyproject_config() -> str:
    """The ``[tool.flwr.app.config]`` table, generated from the settings."""
    lines = [
        "[tool.flwr.app.config]",
        "# Generated from flame/settings.py by: python -m flame.settings --pyproject",
        "# Flower's run config: every run setting (FLAME_X is key x, - for _); lists are",
        '# comma-separated, "" is unset. flwr run --run-config and flame launch override them.',
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in run_config_defaults().items()]
    return "\n".join(lines) + "\n"


def toml_value(value: ConfigValue) -> str:
    """A run-config value as TOML (the pyproject table, ``flwr run --run-config``)."""
    return json.dumps(value)  # true/false, numbers and "strings" read the same in TOML


def server_settings(run_config: dict[str, Any]) -> FlameSettings:
    """The ServerApp's settings: the run config for the run settings (a warning for each one
    this process's environment sets otherwise), its own environment for the rest."""
    settings = load_settings(run_config)
    env = dict(dotenv_values(ENV_FILE)) if ENV_FILE.is_file() else {}
    for line in overridden_by_run_config(run_config, {**env, **os.environ}):
        log.warning(line)
    return settings


def region_settings(run_config: Mapping[str, Any]) -> FlameSettings:
    """A region's settings for one task: the run settings in the run's ``run_config``, this
    node's own environment for the rest (read once per process: the handler and its mods
    share it). A SettingsError if the run config holds no run setting (another app's run)."""
    keys = {config_key(f) for f in RUN_FIELDS}
    run = tuple(sorted((k, v) for k, v in run_config.items() if k in keys))
    if not run:
        raise SettingsError("the run's config holds no Flame run setting (another app's run?)")
    return _region_settings(run)


@functools.lru_cache(maxsize=4)
def _region_settings(run: tuple[tuple[str, Any], ...]) -> FlameSettings:
    return load_settings(dict(run))


# what central training (flame baseline) reads of the run settings: the data and the model's
# training, nothing federated (regions' sampling and time-outs, DP, updates, attacks)
CENTRAL_FIELDS = (
    *DataSettings.model_fields, "num_server_rounds", "local_epochs", "min_local_steps",
    "learning_rate", "lr_schedule", "batch_size", "hidden_sizes", "pos_weight", "threshold",
    "alert_rate", "pretrain_rows", "model_selection",
)  # fmt: skip
# the short flags main.py and flame baseline have always had, for three run settings
FLAG_ALIASES = {"num_server_rounds": "--rounds", "synth_rows": "--rows",
                "synth_fraud_rate": "--fraud-rate"}  # fmt: skip


def add_run_flags(
    parser: argparse.ArgumentParser, title: str = "run settings",
    names: Iterable[str] = RUN_CONFIG_FIELDS,
) -> None:  # fmt: skip
    """A flag for each run setting in ``names`` (all by default), from its field:
    ``--dp-target-epsilon`` sets FLAME_DP_TARGET_EPSILON (the run-config key), with the field's
    description and choices. A flag's value is text, validated with the settings (so a bad
    value names FLAME_X)."""
    group = parser.add_argument_group(title, "each flag overrides FLAME_<NAME> of .env")
    fields = FlameSettings.model_fields
    for name in names:
        field = fields[name]
        flags = [*([FLAG_ALIASES[name]] if name in FLAG_ALIASES else []), f"--{config_key(name)}"]
        kind = field.annotation  # X | None: X
        if get_origin(kind) is UnionType:
            kind = next(a for a in get_args(kind) if a is not type(None))
        choices = _choices(kind)
        default = config_value(field.get_default(call_default_factory=True))
        group.add_argument(
            *flags, dest=name, choices=choices, metavar=None if choices else _metavar(kind),
            help=f"{field.description} (default: {json.dumps(default)})",
        )  # fmt: skip


def _choices(kind: Any) -> list[str] | None:
    if get_origin(kind) is Literal:
        return [str(a) for a in get_args(kind)]
    return ["true", "false"] if kind is bool else None


def _metavar(kind: Any) -> str:
    if get_origin(kind) is list:
        return "A,B"
    return {int: "N", float: "X"}.get(kind, "TEXT")


def env_example() -> str:
    """The text of ``.env.example``: every setting, its description and default (commented)."""
    lines = [
        "# Flame settings. Copy to .env and uncomment what you change.",
        "# Generated from flame/settings.py by: python -m flame.settings > .env.example",
        "# Run settings are Flower's run config (pyproject [tool.flwr.app.config], every one):",
        "# flame launch and make flwr-run submit this file's; flwr run --run-config sets any.",
        "# (run) settings are the run's: every region trains the run config's, so a region's",
        "# .env needs only the (node) settings; (server) ones matter on the server only.",
    ]
    for concern in CONCERNS:
        lines += ["", f"# --- {concern.__doc__}"]
        lines += _example_lines(concern)
    lines += [
        "",
        "# --- Docker Compose only (read by docker compose, not by Flame) ---",
        "# Base image of the Flame image; flame-base:bookworm from scripts/build-base-image.sh",
        "# FLAME_BASE_IMAGE=python:3.11-slim",
        "# index: PyTorch CPU index + PyPI; wheelhouse: ./wheelhouse only (offline)",
        "# FLAME_PIP_SOURCE=index",
        "# Host address the gateway's port 9443 (Fleet API only) is published on; 0.0.0.0 for",
        "# remote regions (the SuperLink's own port 8000 stays on 127.0.0.1)",
        "# FLAME_GATEWAY_BIND=127.0.0.1",
        "# Each region's Redis (its scorer's history): maxmemory in MB; at the cap the least",
        "# recently used expiring keys go first (volatile-lru)",
        "# FLAME_HISTORY_MAXMEMORY=512",
        "# A remote site's scorer (docker-compose.region.yml, profile scoring): its host port",
        "# FLAME_SCORER_PORT=8081",
    ]
    return "\n".join(lines) + "\n"


def _example_lines(concern: type[BaseModel]) -> list[str]:
    lines = []
    for name, field in concern.model_fields.items():
        default = field.default
        if isinstance(default, list):
            default = ",".join(map(str, default))
        elif default is None:
            default = ""
        elif isinstance(default, bool):
            default = str(default).lower()
        if field.description:
            lines.append(f"# {field.description}")
        lines.append(f"# FLAME_{name.upper()}={default}")
    return lines


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--pyproject"]:
        print(pyproject_config(), end="")
    elif sys.argv[1:] == ["--run-config"]:  # this environment's run, for flwr run --run-config
        print(" ".join(f"{k}={toml_value(v)}" for k, v in run_config(load_settings()).items()))
    else:
        print(env_example(), end="")
