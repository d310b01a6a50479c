"""Train Flame in Flower's simulation runtime: one SuperNode per region, same apps as `flwr run .`.

python main.py --rounds 3 --local-epochs 2 --regions us,eu --rows 200000
python main.py --data data/PS_20174392719_1491204439457_log.csv --out runs/kaggle
"""

from __future__ import annotations

import argparse
import sys

from flame.fl.protocol import RunFailed
from flame.log import setup_logging
from flame.ops.simulate import run
from flame.settings import SettingsError, add_run_flags
from flame.track.report import print_rounds


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    p.add_argument("--data", dest="data_path", help="PaySim CSV file or folder of CSVs")
    p.add_argument(
        "--with-balances", action="store_const", const=False, dest="drop_balance_features",
        help="keep the four balance columns (the default leaves them out, as the data's owner "
        "asks)",
    )  # fmt: skip
    p.add_argument(  # the old flag: leaving them out is the default now
        "--drop-balances",
        action="store_const",
        const=True,
        dest="drop_balance_features",
        help=argparse.SUPPRESS,
    )
    p.add_argument("--out", dest="out_dir", help="run folder (default runs/<timestamp>)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also Flower's per-round record dumps and its simulation notes",
    )
    add_run_flags(p)  # --rounds, --local-epochs, --dp-target-epsilon, ...: every run setting
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse(argv))
    verbose = args.pop("verbose")
    setup_logging(verbose=verbose)
    try:
        out = run(args, verbose)
    except (SettingsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"error: the run failed: {err}", file=sys.stderr)
        return 1
    print_rounds(out / "metrics.csv")
    print(f"\nRun folder: {out}  (metrics.csv, model.pt, plots, tensorboard/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
