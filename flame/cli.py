"""The ``flame`` command: ``flame data synth``, ``flame baseline``, ``flame score``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from flame.data.schema import PaySimFormatError
from flame.log import setup_logging
from flame.settings import CENTRAL_FIELDS, SettingsError, add_run_flags, load_settings


def _count(text: str) -> int:
    """A whole number of 1 or more (argparse type), else a one-line usage error."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")
    return int(text)


def _seed(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 0 to 2**32-1")
    return int(text)


def _share(text: str) -> float:
    """A share strictly between 0 and 0.5 (a fraud rate)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"{text!r}: give a share above 0 and below 0.5")
    return value


def _synth(args: argparse.Namespace) -> None:
    from flame.data.synth import generate, write_csv

    settings = load_settings()
    rate = args.fraud_rate if args.fraud_rate is not None else settings.synth_fraud_rate
    frame = generate(args.rows, args.seed, rate)
    write_csv(frame, args.out)
    print(f"wrote {len(frame):,} rows ({int(frame['isFraud'].sum()):,} frauds) to {args.out}")


def _split(args: argparse.Namespace) -> None:
    from flame.data.partition import file_arrays, write_parts
    from flame.files import writable_folder

    settings = load_settings()
    outputs = {}
    if args.regions_into:  # a folder per region, made even without data (compose mounts them)
        for region in settings.regions:
            writable_folder(args.regions_into / region, f"--regions-into {args.regions_into}")
            outputs[region] = args.regions_into / region / "region.parquet"
    if not (args.regions_into or args.part):
        raise ValueError("flame data split: give --part NAME=FILE.parquet or --regions-into DIR")
    if args.only_if_data and settings.data_source() is None:
        print("data split: no PaySim CSV configured or at data/; regions generate synthetic data")
        return
    for spec in args.part or []:
        part, sep, out = spec.partition("=")
        if not sep or not out:
            raise ValueError(f"--part expects NAME=FILE.parquet, got {spec!r}")
        outputs[part] = Path(out)
    for line in write_parts(settings.data_spec(), outputs, args.keep_existing):
        print(f"data split: {line}")
    for part, out in outputs.items():  # warm the feature cache the apps load from
        file_arrays(out, settings.data_spec(), validation=part != "test")


def _compose_regions(args: argparse.Namespace) -> None:
    from flame.ops.compose_regions import FILE, write

    regions = load_settings().regions
    changed = write(regions)
    print(f"{FILE}: {'written' if changed else 'already up to date'} for {','.join(regions)}")


def _launch(args: argparse.Namespace) -> int:
    from flame.ops.launch import launch
    from flame.track.access import login

    settings = load_settings()
    login(settings)
    return launch(settings, args.superlink or settings.superlink, args.app, args.root_certificates)


def _register(args: argparse.Namespace) -> None:
    from flame.ops.launch import register_nodes

    superlink = args.superlink or load_settings().superlink
    for line in register_nodes(superlink, args.keys, args.root_certificates):
        print(f"register: {line}")


def _fab_hash(args: argparse.Namespace) -> None:
    from flame.ops.approval import folder_hash

    print(folder_hash(args.app))


def _supernode(args: argparse.Namespace) -> None:
    from flame.ops.node import supernode

    settings = load_settings()
    argv = [a for a in args.args if a != "--"]
    supernode(
        argv, settings.poll_interval, settings.warm_clientapp, settings.trusted_apps,
        settings.commands_dir,
    )  # fmt: skip


def _certs(args: argparse.Namespace) -> None:
    from flame.ops.certs import make_all

    settings = load_settings()
    written = make_all(args.out, settings.tls_sans, args.force)
    for line in written or ["nothing to do: credentials exist (use --force to renew)"]:
        print(f"certs: {args.out}/{line}" if written else f"certs: {line}")
    if args.distribute:
        from flame.ops.certs import distribute

        for line in distribute(args.out, args.distribute):
            print(f"certs: {args.distribute}/{line}")


def _keygen(args: argparse.Namespace) -> None:
    import shutil

    from flame.ops.certs import NODE_PUB, fingerprint, make_node_key

    made = make_node_key(args.out, args.force)
    public = args.out / NODE_PUB
    print(f"keygen: {args.out}/node.key {'made' if made else 'kept'}; public key {public} "
          f"{fingerprint(public.read_bytes())} (only this file leaves the site)")  # fmt: skip
    if args.publish:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(public, args.publish)
        print(f"keygen: public key copied to {args.publish}")


def _mlflow_server(args: argparse.Namespace) -> None:
    import os

    from flame.ops.mlflow_server import auth_environment

    argv = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not argv:
        raise ValueError("flame mlflow-server: give the server's command, e.g. mlflow server ...")
    extra, made = auth_environment(args.auth, args.auth_database)
    print(f"mlflow-server: basic-auth configuration in {args.auth} "
          f"{'made (new admin login)' if made else 'kept'}", flush=True)  # fmt: skip
    os.execvpe(argv[0], argv, os.environ | extra)  # the secrets go in its environment only


def _mlflow_accounts(args: argparse.Namespace) -> None:
    from flame.ops.mlflow_server import READER, WRITER, admin_login, ensure_accounts
    from flame.track.access import read_credentials
    from flame.track.tracking import tracking_uri

    accounts = {u: p for u, p in ((WRITER, args.writer), (READER, args.reader)) if p}
    if args.show:  # for a person logging in to the UI: the logins, printed on request only
        print(f"MLflow UI logins (username password):\n  {' '.join(admin_login(args.admin))}")
        for path in accounts.values():
            print(f"  {' '.join(read_credentials(path))}")
        return
    settings = load_settings()
    uri = tracking_uri(settings.mlflow_tracking_uri)
    lines = ensure_accounts(uri, args.admin, accounts, settings.mlflow_experiment,
                            settings.mlflow_model_name)  # fmt: skip
    for line in lines:
        print(f"mlflow-accounts: {line}")


def _backfill(args: argparse.Namespace) -> None:
    from flame.track.tracking import backfill

    if not (args.folder / "metrics.csv").exists():
        raise FileNotFoundError(f"{args.folder / 'metrics.csv'} does not exist")
    from flame.track.access import login

    settings = load_settings()
    login(settings)
    sent = backfill(settings, args.folder)
    print(f"mlflow-backfill: sent {sent} metric values to run folder {args.folder}'s MLflow run")


def _baseline(args: argparse.Namespace) -> None:
    from flame.files import writable_folder
    from flame.ops.baseline import run_baseline
    from flame.track.tracking import CsvSink

    overrides = {f: getattr(args, f) for f in CENTRAL_FIELDS} | {
        "data_path": args.data, "drop_balance_features": args.drop_balance_features,
        "out_dir": args.out,
    }  # fmt: skip
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    out = writable_folder(settings.resolved_out_dir(), "--out")
    sink = CsvSink(out / "metrics.csv")
    try:
        result = run_baseline(settings, out, sink)
    finally:
        sink.close()
    print(json.dumps(result, indent=2))
    print(f"baseline: wrote {out / 'model.pt'} and {out / 'metrics.csv'}")


def _score(args: argparse.Namespace) -> None:
    import numpy as np
    from scipy.special import logit

    from flame.data.loader import csv_files, header
    from flame.model import metrics as fm
    from flame.model.score import score_file

    if args.report and "isFraud" not in header(csv_files(args.input)[0]):
        raise ValueError(f"--report needs labels: {args.input} has no isFraud column")
    if ":/" in args.model:  # an MLflow model URI: models:/flame-fraud@champion, runs:/..., ...
        from flame.track.access import check_access, login
        from flame.track.registry import model_file
        from flame.track.tracking import bound_requests, require_server, tracking_uri

        settings = load_settings()
        login(settings)
        uri = tracking_uri(settings.mlflow_tracking_uri)
        bound_requests()
        require_server(uri, f"--model {args.model}")
        check_access(uri)
        args.model = model_file(args.model, uri)
    args.model = Path(args.model)
    scored = score_file(args.model, args.input, args.out, keep=args.report)
    print(f"scored {scored.rows:,} rows -> {args.out} ({scored.flagged:,} predicted fraud)")
    if args.report:
        logits = np.clip(scored.probability, 1e-12, 1 - 1e-12, out=scored.probability)
        logit(logits, out=logits)  # in place: one float64 a row (6.36M rows: 51 MB)
        result = fm.exact_metrics(logits, scored.labels, scored.threshold)
        print(json.dumps(result, indent=2))


def _serve(args: argparse.Namespace) -> None:
    from flame.ops.history_store import open_store
    from flame.ops.serve import serve
    from flame.track.access import check_access, login
    from flame.track.tracking import mlflow_reachable, tracking_uri

    s = load_settings()
    login(s)
    uri = tracking_uri(s.mlflow_tracking_uri)
    if mlflow_reachable(uri):
        check_access(uri)  # a refused login stops the scorer at start, in one line
    store = open_store(s.history_url, s.region or "local", s.state_dir, s.history_ttl)
    serve(uri, s.mlflow_model_name, s.serve_host, s.serve_port, s.serve_reload, s.serve_max_rows,
          store)  # fmt: skip


def _ledger(args: argparse.Namespace) -> None:
    from flame.fl.client_app import region_policy
    from flame.fl.privacy import ledger_report

    settings = load_settings()
    folder = settings.state_dir
    if not folder.is_dir():
        raise FileNotFoundError(f"FLAME_STATE_DIR={folder}: no such folder (no region state here)")
    lines = ledger_report(folder, region_policy(settings))
    print("\n".join(lines) if lines else f"no releases yet in FLAME_STATE_DIR={folder}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flame", description="Federated fraud detection on PaySim.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="action", required=True)
    synth = data.add_parser("synth", help="write synthetic PaySim rows as CSV")
    synth.add_argument("--rows", type=_count, required=True)
    synth.add_argument("--seed", type=_seed, default=42)
    synth.add_argument(
        "--fraud-rate", type=_share, help="fraud share (default FLAME_SYNTH_FRAUD_RATE)"
    )
    synth.add_argument("--out", type=Path, required=True)
    synth.set_defaults(func=_synth)

    split = data.add_parser("split", help="write region / test partitions as Parquet files")
    split.add_argument("--part", action="append", help="NAME=FILE.parquet; NAME a region or test")
    split.add_argument(
        "--regions-into", type=Path, help="DIR: every region's part as DIR/<region>/region.parquet"
    )
    split.add_argument("--keep-existing", action="store_true", help="never replace a file")
    split.add_argument(
        "--only-if-data", action="store_true", help="do nothing when no PaySim CSV is configured"
    )
    split.set_defaults(func=_split)

    regions = sub.add_parser(
        "compose-regions", help="write docker-compose.regions.yml for FLAME_REGIONS"
    )
    regions.set_defaults(func=_compose_regions)

    launch = sub.add_parser("launch", help="submit the Flame app to a SuperLink and wait")
    launch.add_argument("--superlink", help="host:port of the SuperLink (FLAME_SUPERLINK)")
    launch.add_argument("--app", type=Path, default=Path("."), help="Flame app folder")
    launch.add_argument("--root-certificates", type=Path, help="CA certificate (TLS)")
    launch.set_defaults(func=_launch)

    reg = sub.add_parser("register", help="register the regions' public keys with a SuperLink")
    reg.add_argument("--superlink", help="host:port of the SuperLink (FLAME_SUPERLINK)")
    reg.add_argument(
        "--keys", type=Path, nargs="+", required=True,
        help="the sites' public keys: .pub files, or folders searched for *.pub",
    )  # fmt: skip
    reg.add_argument("--root-certificates", type=Path, required=True, help="CA certificate")
    reg.set_defaults(func=_register)

    fab = sub.add_parser(
        "fab-hash", help="the hash of the FAB `flwr run` submits for an app folder (for "
        "FLAME_TRUSTED_APPS)",
    )  # fmt: skip
    fab.add_argument("app", type=Path, nargs="?", default=Path("."), help="app folder")
    fab.set_defaults(func=_fab_hash)

    node = sub.add_parser(
        "supernode", help="flower-supernode with Flame's shorter polling (FLAME_POLL_INTERVAL) "
        "and the region's app approval (FLAME_TRUSTED_APPS)",
    )  # fmt: skip
    node.add_argument("args", nargs=argparse.REMAINDER, help="flower-supernode arguments")
    node.set_defaults(func=_supernode)

    certs = sub.add_parser(
        "certs", help="the coordinator's TLS CA and SuperLink certificate (no region keys: "
        "each site makes its own with flame keygen)",
    )  # fmt: skip
    certs.add_argument("--out", type=Path, default=Path("certs"), help="folder (git-ignored)")
    certs.add_argument("--force", action="store_true", help="renew everything")
    certs.add_argument(
        "--distribute", type=Path, help="also copy each service's files to DIR/<service>/"
    )
    certs.set_defaults(func=_certs)

    keygen = sub.add_parser(
        "keygen", help="a site's node key pair (node.key stays at the site, node.pub is "
        "registered by the coordinator)",
    )  # fmt: skip
    keygen.add_argument("--out", type=Path, required=True, help="the site's own key folder")
    keygen.add_argument("--force", action="store_true", help="renew the key pair")
    keygen.add_argument("--publish", type=Path, help="also copy node.pub to this file")
    keygen.set_defaults(func=_keygen)

    mlserver = sub.add_parser(
        "mlflow-server", help="run an MLflow server command with basic-auth: its admin login "
        "and Flask secret key are made in --auth on first start (kept after)",
    )  # fmt: skip
    mlserver.add_argument("--auth", type=Path, required=True, help="the server's own folder")
    mlserver.add_argument(
        "--auth-database", required=True, help="the user database (sqlite:////mlflow/...)"
    )
    mlserver.add_argument("args", nargs=argparse.REMAINDER, help="mlflow server --app-name ...")
    mlserver.set_defaults(func=_mlflow_server)

    accounts = sub.add_parser(
        "mlflow-accounts", help="as MLflow's admin: Flame's experiment and registered model, "
        "and the writer's and reader's logins (made once into their files, kept after)",
    )  # fmt: skip
    accounts.add_argument(
        "--admin", type=Path, required=True, help="the server's basic_auth.ini (admin login)"
    )
    accounts.add_argument("--writer", type=Path, help="flame-writer's credentials file")
    accounts.add_argument("--reader", type=Path, help="flame-reader's credentials file")
    accounts.add_argument(
        "--show", action="store_true", help="print the logins (to log in to the UI) and stop"
    )
    accounts.set_defaults(func=_mlflow_accounts)

    fill = sub.add_parser(
        "mlflow-backfill", help="log a run folder's metrics.csv values that MLflow is missing"
    )
    fill.add_argument("folder", type=Path, help="run folder holding metrics.csv")
    fill.set_defaults(func=_backfill)

    base = sub.add_parser("baseline", help="train the same model centrally on the regions' union")
    base.add_argument("--data", type=Path, help="PaySim CSV or folder (default: FLAME_DATA_PATH)")
    base.add_argument(
        "--with-balances",
        action="store_const",
        const=False,
        dest="drop_balance_features",
        help="keep the balance columns (default: left out)",
    )
    base.add_argument(  # the old flag: leaving them out is the default now
        "--drop-balances",
        action="store_const",
        const=True,
        dest="drop_balance_features",
        help=argparse.SUPPRESS,
    )
    base.add_argument("--out", type=Path, help="run folder (default runs/<timestamp>)")
    add_run_flags(
        base,
        "run settings it reads (--rounds: as many step blocks as federated rounds)",
        CENTRAL_FIELDS,
    )
    base.set_defaults(func=_baseline)

    score = sub.add_parser("score", help="score a PaySim CSV with a saved model")
    score.add_argument("input", type=Path, help="PaySim-format CSV")
    score.add_argument(
        "--model", required=True, help="model.pt from a run folder, or an MLflow model URI "
        "(models:/flame-fraud@champion; FLAME_MLFLOW_TRACKING_URI)",
    )  # fmt: skip
    score.add_argument("--out", type=Path, required=True, help="output CSV")
    score.add_argument("--report", action="store_true", help="print metrics if labels present")
    score.set_defaults(func=_score)

    ledger = sub.add_parser(
        "ledger", help="each region's privacy ledger under FLAME_STATE_DIR: what every run "
        "spent, the lifetime total and what is left",
    )  # fmt: skip
    ledger.set_defaults(func=_ledger)

    serve = sub.add_parser(
        "serve", help="serve the registry's champion model over HTTP (FLAME_SERVE_*)"
    )
    serve.set_defaults(func=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["supernode"] and not {"-h", "--help"} & set(argv[1:2]):
        argv = ["supernode", "--", *argv[1:]]  # pass every flag through to flower-supernode
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except (PaySimFormatError, SettingsError, OSError, ValueError, RuntimeError) as err:
        print(f"flame: error: {err}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
