"""Privacy / efficiency / robustness sweeps in simulation; prints and writes a results table.

    python benchmarks/privacy_efficiency.py [--out benchmarks/results] [--rows 50000] [--quick]

Each configuration is a real federated run (`main.py`, Flower simulation). Written to --out:
results.csv, results.md and three plots: PR-AUC vs ε (DP-SGD), PR-AUC vs bytes sent per region
per round (codecs), PR-AUC per aggregator under each attack (5 regions, region r1 attacking).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def sweeps(quick: bool) -> list[tuple[str, str, dict[str, str], list[str]]]:
    """(sweep, label, FLAME_* environment, extra main.py args)."""
    runs: list[tuple[str, str, dict[str, str], list[str]]] = []
    for eps in ([] if quick else ["1"]) + ["3", "8"]:
        runs.append(("dp", f"ε={eps}", {"FLAME_DP": "true", "FLAME_DP_TARGET_EPSILON": eps}, []))
    runs.append(("dp", "no DP", {}, []))
    codecs = [("none", "1"), ("fp16", "1"), ("int8", "1"), ("topk", "0.1"), ("topk", "0.01")]
    for codec, ratio in codecs[:3] if quick else codecs:
        label = codec if codec != "topk" else f"topk {ratio}"
        runs.append(("codec", label, {"FLAME_CODEC": codec, "FLAME_TOPK_RATIO": ratio}, []))
    five = ["--regions", "r1,r2,r3,r4,r5"]
    attacks = ["none", "sign_flip", "scale"] + ([] if quick else ["label_flip", "random"])
    rules = ["fedavg", "fedmedian"] + ([] if quick else ["fedtrimmedavg", "krum"])
    for attack in attacks:
        for rule in rules:
            env = {"FLAME_AGGREGATION": rule}
            if attack != "none":
                env |= {"FLAME_ADVERSARIAL_REGIONS": "r1", "FLAME_ATTACK": attack}
            runs.append(("attack", f"{attack} / {rule}", env, five))
    return runs


def run(label: str, env: dict[str, str], extra: list[str], args: argparse.Namespace) -> dict:
    out = args.out / "runs" / label.replace(" ", "_").replace("/", "-").replace("=", "")
    command = [sys.executable, "main.py", "--rows", str(args.rows), "--fraud-rate",
               str(args.fraud_rate), "--rounds", str(args.rounds), "--local-epochs", "1",
               "--out", str(out), *extra]  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    full_env = os.environ | {"FLAME_MLFLOW": "false", "TQDM_DISABLE": "1"} | env
    proc = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"error": proc.returncode}
    table = pd.read_csv(out / "metrics.csv")
    server = table[(table["kind"] == "server") & (table["round"] == args.rounds)].iloc[0]
    train = table[(table["stage"] == "train") & table["kind"].str.startswith("client:")]
    return {
        "pr_auc": server["pr_auc"],
        "roc_auc": server["roc_auc"],
        "f1": server["f1"],
        "epsilon": train["epsilon"].max() if "epsilon" in train else float("nan"),
        "bytes_per_region_round": train["bytes_sent"].mean(),
        "seconds": round(time.time() - started, 1),
    }


def plot(results: pd.DataFrame, folder: Path) -> None:
    dp = results[results["sweep"] == "dp"].copy()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    with_dp = dp[dp["label"] != "no DP"]
    ax.plot(with_dp["epsilon"], with_dp["pr_auc"], marker="o", label="DP-SGD")
    for _, row in dp[dp["label"] == "no DP"].iterrows():
        ax.axhline(row["pr_auc"], color="grey", linestyle="--", label="no DP")
    ax.set(xlabel="ε spent (whole run, δ=1e-5)", ylabel="server PR-AUC", title="Privacy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "pr_auc_vs_epsilon.png", dpi=100)
    plt.close(fig)

    codec = results[results["sweep"] == "codec"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for _, row in codec.iterrows():
        ax.scatter(row["bytes_per_region_round"], row["pr_auc"])
        ax.annotate(row["label"], (row["bytes_per_region_round"], row["pr_auc"]))
    ax.set(xlabel="bytes sent per region per round", ylabel="server PR-AUC", title="Codecs")
    fig.tight_layout()
    fig.savefig(folder / "pr_auc_vs_bytes.png", dpi=100)
    plt.close(fig)

    attack = results[results["sweep"] == "attack"].copy()
    attack[["attack", "rule"]] = attack["label"].str.split(" / ", expand=True)
    pivot = attack.pivot(index="attack", columns="rule", values="pr_auc")
    ax = pivot.plot.bar(figsize=(7, 3.5), rot=0, title="PR-AUC under attack (1 of 5 regions)")
    ax.set_ylabel("server PR-AUC")
    ax.figure.tight_layout()
    ax.figure.savefig(folder / "pr_auc_under_attack.png", dpi=100)
    plt.close(ax.figure)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--fraud-rate", type=float, default=0.01)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer configurations")
    args = p.parse_args()
    if (ROOT / ".env").exists():
        sys.exit("benchmark: .env is present and would change every run's settings; move it away")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for sweep, label, env, extra in sweeps(args.quick):
        result = run(label, env, extra, args)
        rows.append({"sweep": sweep, "label": label, **result})
        print(f"{sweep:7s} {label:28s} " + " ".join(f"{k}={v}" for k, v in result.items()),
              flush=True)  # fmt: skip
    results = pd.DataFrame(rows)
    results.to_csv(args.out / "results.csv", index=False)
    text = results.to_markdown(index=False, floatfmt=".4f")
    (args.out / "results.md").write_text(
        f"Synthetic PaySim, {args.rows:,} rows, {args.fraud_rate:.0%} fraud, {args.rounds} rounds"
        f" x 1 local epoch; 2 regions (dp, codec), 5 regions (attack).\n\n{text}\n"
    )
    plot(results, args.out)
    print("\n" + text)


if __name__ == "__main__":
    main()
