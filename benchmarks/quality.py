"""Model-quality benchmark: central vs federated vs DP-SGD vs no balance columns, on real and
synthetic PaySim; prints the table and writes quality.{md,json,png} to --out.

    python benchmarks/quality.py [--out benchmarks/results] [--seeds 1,2,3] [--rounds 5]
                                 [--synth-rows 1000000] [--real DIR] [--only real|synth]
                                 [--headline] [--rows NAMES] [--set FLAME_X=V] [--work DIR]

Every federated number is a real Flower simulation (``main.py``), every central one a real
``flame baseline`` run, each in its own process, two at a time. Data columns:

- ``real (leave one file out)``: for each of the three shared real samples, train on the other
  two (split into us/eu), score the held-out file with ``flame score``; the cell is the mean over
  the three files, then mean ± std over the seeds.
- ``synthetic hash``: ``--synth-rows`` synthetic rows at the real file's fraud rate (0.129 %),
  scored on the server's held-out test set (hash of nameOrig); one seed.
- ``synthetic time``: the same data with ``--split time`` (test set = the last 20 % of steps).

Columns: PR-AUC, ROC-AUC, recall at precision >= 0.9, F1 at the model's stored threshold (the
F1-optimal threshold chosen on validation rows, never on the scored rows: the benchmark runs with
``FLAME_ALERT_RATE=0``). Each row says its feature set: the default model leaves the balance
columns out; the rows "with balances" keep them (``FLAME_DROP_BALANCE_FEATURES=false``). The
HistGradientBoosting row is scikit-learn's classifier on the same no-balance features and the
same training rows (threshold: F1-optimal on the same validation rows). Every Flame model starts
from the warm start (``flame.model.pretrain``: synthetic rows only, from their own seed); the
rows marked "no warm start" start from random weights (``FLAME_PRETRAIN_ROWS=0``), on the real
column only. The rows "warm start alone" score that synthetic-only starting model itself, with no
federated round (``benchmarks/warm_alone.py``): what the regions' rows add is the gap between it
and the trained rows.

For the real column the server evaluates every round's global model on the held-out file
(``FLAME_TEST_PATH``; training and model selection never read it), so the second table shows,
per round, the held-out PR-AUC beside the pooled validation PR-AUC the selection rule reads, and
how the kept round does against "always the final round".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_FILES = (
    "head-step1-2688.csv",
    "random-sample-3000.csv",
    "steps45-95-spreadsheet-7557.csv",
)
FRAUD_RATE = 0.00129
METRICS = ("pr_auc", "roc_auc", "recall_at_p90", "f1")


@dataclass(frozen=True)
class Row:
    """One row of the table: how its models are trained."""

    name: str
    kind: str  # "federated", "central", "hgb" or "warm" (the warm start alone, no training)
    env: dict[str, str] = field(default_factory=dict)
    drop_balances: bool = True  # the default model leaves the balance columns out
    real_only: bool = False  # an ablation: the real column only (the one it is about)
    headline: bool = True  # one of README's "Results at a glance" rows (--headline)


COLD = {"FLAME_PRETRAIN_ROWS": "0"}  # no warm start: random initial weights
DP1 = {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "1"}
SUB8 = {"FLAME_DP_SUBSPACE": "8"}  # DP-SGD in the public subspace (clipping then 0.1)
EVERY = {"FLAME_DP_SUBSPACE": "0"}  # DP-SGD on every weight (clipping then 1.0)
WITH = False  # drop_balances=WITH: the model with the balance columns (--with-balances)
ROWS = (
    # without the balance columns: the default model
    Row("warm start alone, no balances", "warm"),
    Row("warm start alone, DP model, no balances", "warm", DP1),  # DP's smaller default model
    Row("federated, no balances (the default model)", "federated"),
    Row("federated, no balances, no warm start", "federated", COLD, real_only=True),
    Row("federated DP ε=1, no balances", "federated", DP1, real_only=True),
    Row("federated DP ε=1, no balances, no warm start", "federated", DP1 | COLD,
        real_only=True),
    Row("central, no balances", "central"),
    Row("central, no balances, no warm start", "central", COLD, real_only=True),
    Row("HistGradientBoosting, no balances", "hgb"),
    # with the balance columns (--with-balances)
    Row("warm start alone, with balances", "warm", drop_balances=WITH),
    Row("warm start alone, DP model, with balances", "warm", DP1, drop_balances=WITH),
    Row("federated, with balances", "federated", drop_balances=WITH),
    Row("federated, with balances, no warm start", "federated", COLD, drop_balances=WITH,
        real_only=True),
    Row("federated DP ε=1, with balances", "federated", DP1, drop_balances=WITH),
    Row("federated DP ε=1, with balances, no warm start", "federated", DP1 | COLD,
        drop_balances=WITH, real_only=True),
    Row("central, with balances", "central", drop_balances=WITH),
    Row("central, with balances, no warm start", "central", COLD, drop_balances=WITH,
        real_only=True),
    # ablations (not in README's table)
    Row("federated DP ε=3, with balances", "federated",
        {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "3"}, drop_balances=WITH,
        headline=False),
    Row("federated DP ε=8, with balances", "federated",
        {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "8"}, drop_balances=WITH,
        headline=False),
    Row("federated DP clip only (σ=0), with balances", "federated",
        {"FLAME_DP": "true", "FLAME_DP_NOISE_MULTIPLIER": "0"}, drop_balances=WITH,
        headline=False),
    # where DP's loss without the balance columns comes from: the DP model's size, its
    # clipping and batches (σ=0), or its noise (ε=8)
    Row("federated, no balances, DP model size", "federated", {"FLAME_HIDDEN_SIZES": "32,16"},
        real_only=True, headline=False),
    Row("federated DP clip only (σ=0), no balances", "federated",
        {"FLAME_DP": "true", "FLAME_DP_NOISE_MULTIPLIER": "0"} | EVERY, real_only=True,
        headline=False),
    Row("federated DP ε=8, no balances", "federated",
        {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": "8"} | EVERY, real_only=True,
        headline=False),
    # DP-SGD from the warm start without the balance columns trains in an 8-dim subspace of
    # public gradients (flame.fl.subspace); on every weight, or in the subspace elsewhere
    Row("federated DP ε=1, no balances, every weight", "federated", DP1 | EVERY,
        real_only=True, headline=False),
    Row("federated DP ε=1, no balances, public subspace, no warm start", "federated",
        DP1 | SUB8 | COLD, real_only=True, headline=False),
    Row("federated DP ε=1, with balances, public subspace", "federated", DP1 | SUB8,
        drop_balances=WITH, headline=False),
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    row: Row
    column: str  # "real", "synthetic hash", "synthetic time"
    seed: int
    heldout: str = ""  # real column: the file scored


def scores(probability: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    precision, recall, _ = precision_recall_curve(y, probability)
    predicted = probability >= threshold
    tp = float((predicted & (y == 1)).sum())
    f1 = 2 * tp / (predicted.sum() + (y == 1).sum()) if tp else 0.0
    return {
        "pr_auc": float(average_precision_score(y, probability)),
        "roc_auc": float(roc_auc_score(y, probability)),
        "recall_at_p90": float(recall[precision >= 0.9].max(initial=0.0)),
        "f1": float(f1),
    }


def run(command: list[str], env: dict[str, str], log: Path) -> None:
    started = time.time()
    full = os.environ | {"FLAME_MLFLOW": "false", "FLAME_TENSORBOARD": "false"}
    full |= {"TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"} | env
    with log.open("w") as out:
        proc = subprocess.run(command, cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}); see {log}")
    print(f"  {time.time() - started:5.0f} s  {' '.join(command[1:])}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.cache = work / "cache"
        self.reused = 0  # runs finished by an earlier, interrupted invocation (--work)

    def env(self, job: Job) -> dict[str, str]:
        env = {"FLAME_CACHE_DIR": str(self.cache), "FLAME_NUM_SERVER_ROUNDS": str(self.args.rounds)}
        env["FLAME_STATE_DIR"] = str(self.work / "state")  # the regions' secrets and ledgers
        env |= {"FLAME_SEED": str(job.seed)} | job.row.env | self.args.extra
        env |= {"FLAME_DROP_BALANCE_FEATURES": str(job.row.drop_balances).lower()}
        env["FLAME_ALERT_RATE"] = "0"  # the F1 column: at the F1-optimal stored threshold
        if job.column == "real":
            env["FLAME_DATA_PATH"] = str(self.train_dir(job.heldout))
            # the server's per-round evaluation on the held-out file (metrics.csv): training
            # and model selection never read the test set
            env["FLAME_TEST_PATH"] = str((self.args.real / job.heldout).resolve())
        else:
            env |= {"FLAME_DATA_PATH": "", "FLAME_SYNTH_ROWS": str(self.args.synth_rows)}
            env |= {"FLAME_SYNTH_FRAUD_RATE": str(FRAUD_RATE)}
            env["FLAME_SPLIT"] = "time" if job.column == "synthetic time" else "hash"
        return env

    def train_dir(self, heldout: str) -> Path:
        """A folder with the two real files other than ``heldout`` (symbolic links)."""
        folder = self.work / "real" / f"without-{Path(heldout).stem}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in REAL_FILES:
            if name != heldout and not (folder / name).exists():
                (folder / name).symlink_to(self.args.real.resolve() / name)
        return folder

    def evaluate(self, job: Job) -> dict[str, float]:
        slug = "-".join([job.row.name, job.column, str(job.seed), Path(job.heldout).stem])
        out = self.work / "runs" / slug.replace(" ", "_").replace("/", "")
        out.mkdir(parents=True, exist_ok=True)
        env = self.env(job)
        if job.row.kind == "hgb":
            return self.hgb(env, job)
        model, scored = out / "model.pt", out / "scored.csv"
        done = model.exists() and (job.column != "real" or scored.exists())
        if done:  # written last, so the run finished: an earlier invocation's
            self.reused += 1
        elif job.row.kind == "federated":
            run([sys.executable, "main.py", "--out", str(out)], env, out / "log.txt")
        elif job.row.kind == "warm":
            run([sys.executable, "benchmarks/warm_alone.py", "--out", str(out)], env,
                out / "log.txt")  # fmt: skip
        else:
            run([sys.executable, "-m", "flame.cli", "baseline", "--out", str(out)], env,
                out / "log.txt")  # fmt: skip
        if job.column == "real":
            heldout = self.args.real / job.heldout
            if not done:
                run([sys.executable, "-m", "flame.cli", "score", str(heldout), "--model",
                     str(model), "--out", str(scored)], env, out / "score-log.txt")  # fmt: skip
            return self.from_scored(scored) | rounds(out / "metrics.csv")
        return self.on_test_set(model, env)

    @staticmethod
    def from_scored(scored: Path) -> dict[str, float]:
        import pandas as pd

        frame = pd.read_csv(scored)
        p, y = frame["fraud_probability"].to_numpy(), frame["isFraud"].to_numpy()
        flagged = frame["is_fraud_predicted"].to_numpy() == 1
        threshold = p[flagged].min() if flagged.any() else math.inf
        return scores(p, y, threshold)

    @staticmethod
    def on_test_set(model_path: Path, env: dict[str, str]) -> dict[str, float]:
        import torch

        from flame.data.partition import heldout_arrays
        from flame.model import metrics as fm
        from flame.model.net import load_model
        from flame.model.train import predict_logits
        from flame.settings import load_settings

        data = _settings(env, load_settings).data_spec()
        model, card = load_model(model_path)
        x, y = heldout_arrays(data)
        x = x[:, : len(card.feature_names)]
        probability = fm.sigmoid(predict_logits(model, torch.from_numpy(x)))
        return scores(probability, y, card.threshold)

    def hgb(self, env: dict[str, str], job: Job) -> dict[str, float]:
        from sklearn.ensemble import HistGradientBoostingClassifier

        from flame.data.features import build_features
        from flame.data.loader import read_paysim_file
        from flame.data.partition import heldout_arrays, prepare
        from flame.model import metrics as fm
        from flame.ops.baseline import union
        from flame.settings import load_settings

        data = _settings(env, load_settings).data_spec()
        prepare(data)
        (x, y), (x_val, y_val) = union(data, "train"), union(data, "val")
        model = HistGradientBoostingClassifier(random_state=job.seed).fit(x.numpy(), y.numpy())
        p_val = model.predict_proba(x_val.numpy())[:, 1]
        logit = lambda p: np.log(np.clip(p, 1e-12, 1) / np.clip(1 - p, 1e-12, 1))  # noqa: E731
        threshold = fm.best_threshold(*fm.histograms(logit(p_val), y_val.numpy()))
        if job.column == "real":
            frame = read_paysim_file(self.args.real / job.heldout)
            x_eval, y_eval = build_features(frame, True), frame["isFraud"].to_numpy()
        else:
            x_eval, y_eval = heldout_arrays(data)
        probability = model.predict_proba(x_eval)[:, 1]
        print(f"  hgb {job.column} seed {job.seed} {job.heldout}", flush=True)
        return scores(probability, y_eval, threshold)


def rounds(metrics_csv: Path) -> dict[str, object]:
    """A federated run's figures per round (``metrics.csv``): the pooled validation PR-AUC
    model selection reads, the held-out file's PR-AUC (the server's evaluation), the round
    kept. Empty for a run without rounds (central, warm start alone)."""
    import pandas as pd

    if not metrics_csv.exists():
        return {}
    frame = pd.read_csv(metrics_csv)
    frame = frame[(frame["stage"] == "evaluate") & (frame["round"] > 0)]
    # a round logged twice (a resumed run): its last row
    by_kind = {k: g.groupby("round")["pr_auc"].last() for k, g in frame.groupby("kind")}
    if not {"client_aggregate", "server", "selected"} <= set(by_kind):
        return {}
    return {
        "validation_by_round": [float(v) for v in by_kind["client_aggregate"].sort_index()],
        "heldout_by_round": [float(v) for v in by_kind["server"].sort_index()],
        "selected_round": int(by_kind["selected"].index[-1]),
    }


def round_table(results: list[tuple[Job, dict]]) -> str:
    """Per round, mean over the real column's runs (seeds x held-out files): validation and
    held-out PR-AUC, and the selection rule against "always the final round"."""
    runs: dict[str, list[dict]] = {}
    for job, result in results:
        if job.column == "real" and "heldout_by_round" in result:
            runs.setdefault(job.row.name, []).append(result)
    if not runs:
        return ""
    n = max(len(r["heldout_by_round"]) for rs in runs.values() for r in rs)
    head = " | ".join(f"r{i}" for i in range(1, n + 1))
    lines = [
        f"| model | held-out PR-AUC per round: {head} | validation per round: {head} "
        "| kept rounds (runs) | kept | final round | kept − final: wins / ties / losses |",
        "|---|" + "---:|" * (2 * n + 4),
    ]
    for name in (r.name for r in ROWS if r.name in runs):
        rs = [
            r
            for r in runs[name]
            if len(r["heldout_by_round"]) == len(r["validation_by_round"]) == n
        ]
        if not rs:
            continue
        held = np.array([r["heldout_by_round"] for r in rs])
        val = np.array([r["validation_by_round"] for r in rs])
        kept = np.array([r["pr_auc"] for r in rs])
        final = np.array([r["heldout_by_round"][-1] for r in rs])
        diff = kept - final
        record = f"{(diff > 1e-3).sum()} / {(abs(diff) <= 1e-3).sum()} / {(diff < -1e-3).sum()}"
        cells = [f"{v:.3f}" for v in held.mean(axis=0)] + [f"{v:.3f}" for v in val.mean(axis=0)]
        kept_rounds = Counter(r["selected_round"] for r in rs)
        cells += [", ".join(f"r{k} ×{v}" for k, v in sorted(kept_rounds.items(), reverse=True))]
        cells += [f"{kept.mean():.3f}"]
        cells += [f"{final.mean():.3f}", record]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings(env: dict[str, str], load_settings):  # type: ignore[no-untyped-def]
    """Settings as the child processes see them (env applied, nothing else of ours)."""
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def selected_rows(names: str | None, headline: bool = False) -> list[Row]:
    """The row named exactly ``names``, else the rows whose name contains one of the
    comma-separated ``names`` (all when None; README's rows only with ``headline``)."""
    if not names:
        return [r for r in ROWS if r.headline or not headline]
    if exact := [r for r in ROWS if r.name == names.strip()]:
        return exact
    wanted = [n.strip() for n in names.split(",")]
    rows = [r for r in ROWS if any(w in r.name for w in wanted)]
    if not rows:
        sys.exit(f"quality: --rows {names!r} matches none of {[r.name for r in ROWS]}")
    return rows


def jobs(args: argparse.Namespace) -> list[Job]:
    out = []
    for row in selected_rows(args.rows, args.headline):
        if args.only in (None, "real"):
            out += [Job(row, "real", s, f) for s in args.seeds for f in REAL_FILES]
        if args.only in (None, "synth") and not row.real_only:
            out += [Job(row, c, args.seeds[0]) for c in ("synthetic hash", "synthetic time")]
    return out


def table(results: list[tuple[Job, dict[str, float]]]) -> tuple[str, dict]:
    """Markdown table (mean ± std over seeds; the real column averages the three files first)."""
    cells: dict[str, dict[str, dict[str, list[float]]]] = {}
    for job, result in results:
        cells.setdefault(job.row.name, {}).setdefault(job.column, {})
        per_seed = cells[job.row.name][job.column]
        for metric in METRICS:
            per_seed.setdefault(f"{metric}@{job.seed}", []).append(result[metric])
    columns = [c for c in ("real", "synthetic hash", "synthetic time")
               if any(c in by for by in cells.values())]  # fmt: skip
    summary: dict = {}
    header = "| model | " + " | ".join(
        f"{c}: {m}" for c in columns for m in ("PR-AUC", "ROC-AUC", "R@P0.9", "F1")
    )
    lines = [header + " |", "|---|" + "---:|" * (4 * len(columns))]
    for row in (r for r in ROWS if r.name in cells):
        parts = []
        for column in columns:
            per_seed = cells.get(row.name, {}).get(column, {})
            for metric in METRICS:
                values = [float(np.mean(v)) for k, v in per_seed.items() if k.startswith(metric)]
                mean = float(np.mean(values)) if values else math.nan
                std = float(np.std(values)) if len(values) > 1 else 0.0
                summary.setdefault(row.name, {}).setdefault(column, {})[metric] = {
                    "mean": mean, "std": std, "seeds": len(values),
                }  # fmt: skip
                text = f"{mean:.3f} ± {std:.3f}" if len(values) > 1 else f"{mean:.3f}"
                parts.append(text if values else "—")
        lines.append(f"| {row.name} | " + " | ".join(parts) + " |")
    return "\n".join(lines), summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = sorted({c for by in summary.values() for c in by})
    names = [r.name for r in ROWS if r.name in summary]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(len(columns), 1)
    for i, column in enumerate(columns):
        means = [summary[n][column]["pr_auc"]["mean"] for n in names]
        stds = [summary[n][column]["pr_auc"]["std"] for n in names]
        ax.bar(np.arange(len(names)) + i * width, means, width, yerr=stds, label=column, capsize=2)
    ax.set_xticks(np.arange(len(names)) + width * (len(columns) - 1) / 2)
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("PR-AUC")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Model quality: PR-AUC per model and data (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("FLAME_"):
        sys.exit(f"quality: --set {text!r} is not FLAME_NAME=VALUE")
    return key, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--synth-rows", type=int, default=1_000_000)
    p.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "paysim-real")
    p.add_argument("--only", choices=["real", "synth"], help="one data family only")
    p.add_argument(
        "--work", type=Path, help="scratch folder (default: a temporary one); runs an earlier "
        "invocation finished there are reused, so an interrupted benchmark resumes",
    )  # fmt: skip
    p.add_argument("--parallel", type=int, default=2, help="runs at a time")
    p.add_argument("--rows", help="only rows whose name contains one of these (comma-separated)")
    p.add_argument(
        "--headline", action="store_true",
        help="only README's rows (no ε=3, ε=8 or clipping-only ablation): with --only real, "
        "the run README's \"Results at a glance\" comes from",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="FLAME_X=V",
        help="a setting for every run (repeatable): to try a hyper-parameter by leaving one "
        "file out; never tune on the number you report",
    )  # fmt: skip
    args = p.parse_args()
    args.extra = dict(parse_setting(s) for s in args.set)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.headline and args.rows:
        sys.exit("quality: --headline and --rows each choose the rows; give one of them")
    if (ROOT / ".env").exists():
        sys.exit("quality: .env is present and would change every run's settings; move it away")
    missing = [f for f in REAL_FILES if not (args.real / f).exists()]
    if args.only != "synth" and missing:
        sys.exit(f"quality: real samples {missing} not found in {args.real} (--real DIR)")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="flame-quality-") as tmp:
        bench = Bench(args, args.work or Path(tmp))
        todo = jobs(args)
        # synthetic data first, one at a time per cache entry: later runs reuse its cache
        for column in ("synthetic hash", "synthetic time"):
            first = next((j for j in todo if j.column == column and j.row.kind != "hgb"), None)
            if first is not None:
                from flame.data.partition import prepare
                from flame.settings import load_settings

                prepare(_settings(bench.env(first), load_settings).data_spec())
        with ThreadPoolExecutor(args.parallel) as pool:
            results = list(zip(todo, pool.map(bench.evaluate, todo), strict=True))
    text, summary = table(results)
    if per_round := round_table(results):
        text += (
            "\n\nPer round (federated runs, real column; the held-out file's PR-AUC as the server "
            "evaluates it each round, the pooled validation PR-AUC the selection rule reads; "
            '"kept" is the selected model\'s held-out PR-AUC as `flame score` gives it):\n\n'
            + per_round
        )
    minutes = (time.time() - started) / 60
    machine = f"{os.cpu_count()} CPUs, {sys.platform}"
    reused = (
        f" ({bench.reused} of {len(todo)} runs reused from {args.work})" if bench.reused else ""
    )
    synthetic = any(j.column != "real" for j in todo)
    intro = (
        f"{time.strftime('%Y-%m-%d')}, {machine}, {minutes:.0f} min{reused}; {args.rounds} rounds, "
        f"seeds {args.seeds} (real column)"
        + (f", seed {args.seeds[0]} (synthetic, {args.synth_rows:,} rows at {FRAUD_RATE:.3%} "
           "fraud)" if synthetic else "") + "."
        + (f" Settings: {' '.join(args.set)}." if args.set else "")
    )  # fmt: skip
    (args.out / "quality.md").write_text(f"{intro}\n\n{text}\n")
    raw = [{"row": j.row.name, "column": j.column, "seed": j.seed, "heldout": j.heldout, **r}
           for j, r in results]  # fmt: skip
    (args.out / "quality.json").write_text(
        json.dumps({"about": intro, "summary": summary, "runs": raw}, indent=1)
    )
    plot(summary, args.out / "quality.png")
    print(f"\n{intro}\n\n{text}")


if __name__ == "__main__":
    main()
