# ruff: noqa: E501  (scratch diagnostics of the dp-scratch branch)
"""Run benchmark jobs for one held-out file only: fold.py WORK ROWNAME HELDOUT SEEDS [FLAME_X=V ...]"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as q

work, row, held, seeds = sys.argv[1:5]
extra = dict(a.split("=", 1) for a in sys.argv[5:])
args = argparse.Namespace(
    rounds=5, real=Path("/work/shared/data/paysim-real"), extra=extra, synth_rows=0
)
bench = q.Bench(args, Path(work))
r = next(r for r in q.ROWS if r.name == row)
for s in seeds.split(","):
    job = q.Job(r, "real", int(s), held)
    print(s, held, bench.evaluate(job), flush=True)
