# ruff: noqa: B905  (scratch diagnostics of the dp-scratch branch)
"""Per benchmark row (seeds x files in WORK): held-out PR-AUC of the round each rule keeps:
first maximum of pooled validation PR-AUC (the old rule), latest within one standard error
(the new rule), the last round; mean over files per seed, then mean ± std over seeds."""

import collections
import glob
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score as ap

from flame.data.features import build_features
from flame.data.loader import read_paysim_file
from flame.model import metrics as fm
from flame.model.net import load_model
from flame.model.train import predict_logits

REAL = Path("/work/shared/data/paysim-real")
cells = collections.defaultdict(lambda: collections.defaultdict(list))
cache = {}
for work in sys.argv[1:]:
    for d in sorted(glob.glob(work + "/runs/*")):
        d = Path(d)
        if not (d / "model.pt").exists() or not (d / "round-1.npz").exists():
            continue
        row, seed, held = re.match(r"(.*)-real-(\d+)-(.*)$", d.name).groups()
        model, card = load_model(d / "model.pt")
        if (held, card.drop_balance_features) not in cache:
            frame = read_paysim_file(REAL / f"{held}.csv")
            cache[held, card.drop_balance_features] = (
                build_features(frame, card.drop_balance_features),
                frame["isFraud"].to_numpy(),
            )
        x, y = cache[held, card.drop_balance_features]
        m = pd.read_csv(d / "metrics.csv")
        c = m[(m.kind == "client_aggregate") & (m.stage == "evaluate")].sort_values("round")
        val = dict(zip(c["round"].astype(int), c.pr_auc))
        frauds = dict(zip(c["round"].astype(int), c.tp + c.fn))
        rounds = sorted(val)
        held_r = {}
        for r in rounds:
            a = np.load(d / f"round-{r}.npz")
            model.load_state_dict({n: torch.from_numpy(a[n]) for n in a.files})
            held_r[r] = ap(y, predict_logits(model, torch.from_numpy(x)))
        old = max(rounds, key=lambda r: (val[r], -r))
        top = max(val.values())
        new = max(r for r in rounds if val[r] >= top - fm.pr_auc_margin(top, frauds[r]))
        for k, r in (
            ("first maximum (old rule)", old),
            ("latest within 1 SE (new rule)", new),
            ("last round", rounds[-1]),
        ):
            cells[row.replace("_", " ")][k, int(seed)].append(held_r[r])
        for r in rounds:
            cells[row.replace("_", " ")][f"round {r}", int(seed)].append(held_r[r])
keys = ["first maximum (old rule)", "latest within 1 SE (new rule)", "last round"] + [
    f"round {r}" for r in range(1, 6)
]
print(
    "| run (held-out PR-AUC, mean over the 3 files, mean ± std over seeds) | "
    + " | ".join(keys)
    + " |"
)
print("|---|" + "---:|" * len(keys))
for row, by in cells.items():
    parts = []
    for k in keys:
        per_seed = [np.mean(v) for (kk, s), v in sorted(by.items()) if kk == k]
        parts.append(f"{np.mean(per_seed):.3f} ± {np.std(per_seed):.3f}" if per_seed else "—")
    seeds = sorted({s for (_, s) in by})
    print(f"| {row}, seeds {','.join(map(str, seeds))} | " + " | ".join(parts) + " |")
