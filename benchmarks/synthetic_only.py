"""The synthetic-only model on the shared real files (issue #25, item 4): trained on synthetic
rows only (``benchmarks/warm_alone.py``: the warm start a federated run starts from, its
threshold chosen on synthetic validation rows), scored by ``flame score`` on each real file.
It never sees a real row, so every real file is held out; the table gives each file's PR-AUC,
their mean (the quality benchmark's "warm start alone" figure) and the PR-AUC of the three
files scored together as one set of rows.

    python benchmarks/synthetic_only.py [--seeds 1,2,3] [--real DIR] [--work W] [--out DIR]

Writes synthetic-only.md and synthetic-only.json to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import REAL_FILES, ROOT, run

MODELS = {"with the balance columns": False, "without the balance columns": True}


def scored(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, fraud probabilities) of a ``flame score`` output."""
    frame = pd.read_csv(path, usecols=["isFraud", "fraud_probability"])
    return frame["isFraud"].to_numpy(), frame["fraud_probability"].to_numpy()


def one_model(work: Path, real: Path, seed: int, drop_balances: bool) -> dict[str, float]:
    """Each real file's PR-AUC and the pooled one, for the synthetic-only model of ``seed``."""
    out = work / f"seed{seed}-{'no' if drop_balances else 'with'}-balances"
    out.mkdir(parents=True, exist_ok=True)
    env = {"FLAME_SEED": str(seed), "FLAME_DROP_BALANCE_FEATURES": str(drop_balances).lower(),
           "FLAME_CACHE_DIR": str(work / "cache"), "FLAME_DATA_PATH": "", "FLAME_ALERT_RATE": "0",
           "FLAME_RUNS_DIR": str(work / "runs")}  # fmt: skip
    if not (out / "model.pt").exists():
        run([sys.executable, "benchmarks/warm_alone.py", "--out", str(out)], env, out / "log.txt")
    labels, probabilities, result = [], [], {}
    for name in REAL_FILES:
        target = out / f"scored-{name}"
        if not target.exists():
            command = [
                "-m",
                "flame.cli",
                "score",
                str(real / name),
                "--model",
                str(out / "model.pt"),
            ]
            run([sys.executable, *command, "--out", str(target)], env, out / "score-log.txt")
        y, p = scored(target)
        result[name] = float(average_precision_score(y, p))
        labels.append(y)
        probabilities.append(p)
    result["mean of the files"] = statistics.mean(result[n] for n in REAL_FILES)
    result["pooled"] = float(
        average_precision_score(np.concatenate(labels), np.concatenate(probabilities))
    )
    return result


def table(results: dict[str, list[dict[str, float]]], seeds: list[int]) -> str:
    columns = [*REAL_FILES, "mean of the files", "pooled"]
    lines = [
        f"{time.strftime('%Y-%m-%d')}, seeds {seeds}; PR-AUC, mean ± std (population) over seeds.",
        "",
        "| synthetic rows only | " + " | ".join(c.removesuffix(".csv") for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for model, runs in results.items():
        cells = []
        for c in columns:
            values = [r[c] for r in runs]
            cells.append(f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "paysim-real")
    p.add_argument("--work", type=Path, default=Path("/tmp/flame-synthetic-only"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "synthetic-only")
    args = p.parse_args()
    missing = [n for n in REAL_FILES if not (args.real / n).exists()]
    if missing:
        sys.exit(f"synthetic_only: --real {args.real} lacks {', '.join(missing)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {m: [one_model(args.work, args.real.resolve(), s, drop) for s in seeds]
               for m, drop in MODELS.items()}  # fmt: skip
    text = table(results, seeds)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "synthetic-only.md").write_text(text)
    (args.out / "synthetic-only.json").write_text(
        json.dumps({"seeds": seeds, "runs": results}, indent=1)
    )


if __name__ == "__main__":
    main()
