"""``raypost`` command line. Every subcommand's flags are declared here, in one place;
the work is done by a handler in the package that owns it (imported lazily, so
``raypost --help`` stays fast and a bad flag fails before Ray or torch load).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from raypost.errors import Interrupted, RaypostError


def _methods() -> str:
    from raypost.recipes import method_names

    return ", ".join(method_names())


def _sweep(sub):
    p = sub.add_parser("sweep", help="Search hyperparameters with Ray Tune + Optuna; each trial is a Ray Train job.")
    p.add_argument("method", help=f"{_methods()}, or the module path of your own recipe")
    p.add_argument("--space", help="search-space YAML (default: the packaged raypost/search_spaces/METHOD.yaml)")
    p.add_argument("--samples", type=int, help="number of trials (default: the space's `samples`)")
    p.add_argument("--address", help="Ray address: 'auto' to attach to a running cluster (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="Ray Train workers per trial (default: the space's, else 2)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (0 trains on CPU)")
    p.add_argument("--cpus-per-worker", type=float,
                   help="CPUs per worker; the worker trains with one torch thread per CPU (default: the space's, else 1)")
    p.add_argument("--placement", choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"), default="PACK",
                   help="how a trial's workers are placed on nodes (Ray placement-group strategy; default PACK: "
                        "as few nodes as fit them; SPREAD: one per node where possible)")
    p.add_argument("--name", help="sweep name: letters, digits, . _ - (default: METHOD-<timestamp>); reuse it with --resume")
    p.add_argument("--resume", action="store_true", help="resume the sweep called --name; finished trials are not redone")
    p.add_argument("--scheduler", choices=("asha", "fifo"), help="early stopping (default: the space's, else asha)")
    p.add_argument("--storage", help="shared folder for Ray checkpoints and the Optuna study (default: ./ray_results)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts per trial before it errors")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed value of the space")
    _console_flags(p)
    p.set_defaults(handler="raypost.tune.sweep:cli_sweep")


def _console_flags(p):
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's, Tune's and every library's own output instead of raypost's progress lines")


def _train(sub):
    p = sub.add_parser("train", help="Train one run (a Ray Train job) from a config file.")
    p.add_argument("method", help=f"{_methods()}, or the module path of your own recipe")
    p.add_argument("--config", help="YAML of flat config keys (see `--help-config`)")
    p.add_argument("--objective", help="METRIC:max|min deciding the logged adapter (default eval_accuracy:max)")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--address", help="Ray address ('auto' for a running cluster)")
    p.add_argument("--name", help="run name")
    p.add_argument("--storage", help="folder for Ray checkpoints (default: ./ray_results)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    _console_flags(p)
    p.set_defaults(handler="raypost.tune.sweep:cli_train")


def _data(sub):
    p = sub.add_parser("data", help="Generate or convert datasets.")
    dsub = p.add_subparsers(dest="dataset", required=True)
    g = dsub.add_parser("stepgame", help="Generate StepGame data in the official JSON format, or fetch the "
                                           "official release files (--official).")
    g.add_argument("--official", action="store_true",
                   help="download the official release files (checksum-verified, cached) instead of generating")
    g.add_argument("--k", default="1-10", help="hop counts, e.g. 1-10 or 1,3,5")
    g.add_argument("--n", type=int, help="examples per k (generated data; default 1000)")
    noise = g.add_mutually_exclusive_group()
    noise.add_argument("--noise", action="store_true", help="disconnected, irrelevant and supporting noise sentences")
    noise.add_argument("--clean", action="store_true", help="no noise sentences (the default)")
    g.add_argument("--seed", type=int, help="generator seed (generated data; default 0)")
    g.add_argument("--split", help="file name part qa{k}_{split}.json (default train); with --official: "
                                   "train, valid or test (default valid)")
    g.add_argument("--url-base", help="with --official: a mirror of the release's Dataset/CompleteVersion folder "
                                      "(default $RAYPOST_STEPGAME_URL, else the StepGame GitHub repository)")
    g.add_argument("--out", required=True, help="output folder")
    g.set_defaults(handler="raypost.stepgame.cli:cli_generate")
    c = dsub.add_parser("stepgame-to-instructions", help="Convert StepGame JSON files to instruction JSONL (for IM).")
    c.add_argument("inputs", nargs="+", help="StepGame JSON files or folders")
    c.add_argument("--out", required=True, help="output JSONL file")
    c.set_defaults(handler="raypost.stepgame.cli:cli_to_instructions")
    k = dsub.add_parser("stepgame-check", help="Run the symbolic checker over StepGame files and report per k.")
    k.add_argument("inputs", nargs="+", help="StepGame JSON files or folders")
    k.set_defaults(handler="raypost.stepgame.cli:cli_check")


def _eval(sub):
    p = sub.add_parser("eval", help="Evaluate a model or adapter.")
    esub = p.add_subparsers(dest="benchmark", required=True)
    s = esub.add_parser("stepgame", help="StepGame accuracy per k and per hop distance.")
    s.add_argument("--adapter", help="adapter folder, run URI (runs:/ID/adapter) or models:/NAME@ALIAS")
    s.add_argument("--model", help="base model to evaluate without adapter")
    s.add_argument("--data", required=True, help="StepGame JSON files or folders")
    s.add_argument("--limit", type=int, help="examples per file")
    s.add_argument("--out", default="stepgame_eval", help="folder for the table and plot")
    s.add_argument("--tracking-uri", help="MLflow tracking URI (results logged when --run-id is given)")
    s.add_argument("--run-id", help="log results to this MLflow run")
    s.set_defaults(handler="raypost.tracking.cli:cli_eval")


def _registry(sub):
    p = sub.add_parser("promote", help="Register the best trial's adapter; move alias 'champion' to it.")
    p.add_argument("target", help="sweep name or MLflow run id")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--metric", help="metric to rank trials (default: the sweep's)")
    p.add_argument("--mode", choices=("max", "min"), help="default: the sweep's")
    p.add_argument("--alias", default="champion")
    p.add_argument("--tracking-uri")
    p.set_defaults(handler="raypost.tracking.cli:cli_promote")

    q = sub.add_parser("predict", help="Load a registered adapter onto its base model and predict.")
    q.add_argument("model_uri", help="models:/NAME@champion, runs:/ID/adapter or a folder")
    q.add_argument("--input", required=True, help="JSONL rows, or a StepGame JSON file")
    q.add_argument("--output", help="write predictions here (default: stdout)")
    q.add_argument("--tracking-uri")
    q.set_defaults(handler="raypost.tracking.cli:cli_predict")

    u = sub.add_parser("ui", help="Start the MLflow UI on 127.0.0.1 for the tracking store.")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--tracking-uri")
    u.set_defaults(handler="raypost.tracking.cli:cli_ui")


def _report(sub):
    p = sub.add_parser("report", help="Build the results report (Markdown + plots) from MLflow sweeps.")
    p.add_argument("sweeps", nargs="+", help="sweep names")
    p.add_argument("--out", default="docs/results", help="output folder")
    p.add_argument("--tracking-uri")
    p.set_defaults(handler="raypost.report:cli_report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypost", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"raypost {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_sweep, _train, _data, _eval, _registry, _report):
        add(sub)
    return parser


def _version() -> str:
    from raypost import __version__

    return __version__


# Exceptions from these packages mean the tracking store failed (a server that does not answer,
# an unknown URI scheme, a read-only or locked SQLite file): one line and exit 3, like TrackingError.
TRACKING_PACKAGES = ("mlflow", "requests", "urllib3", "sqlalchemy", "alembic", "sqlite3")


def tracking_failure(exc: BaseException) -> str | None:
    """The one line for a tracking-store failure anywhere in ``exc``'s chain, else None."""
    seen = exc
    while seen is not None:
        module = type(seen).__module__.split(".")[0]
        if module in TRACKING_PACKAGES:
            first = next((line.strip() for line in str(seen).splitlines() if line.strip()), "")
            return f"the MLflow tracking store failed: {type(seen).__name__}: {first[:300]}"
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raypost import knobs

    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    if quiet and verbose:
        print("raypost: error: --verbose and -q/--quiet cannot be used together: choose one", file=sys.stderr)
        return 2
    if quiet or verbose:
        os.environ[knobs.CONSOLE_ENV] = "quiet" if quiet else "verbose"
    knobs.apply_defaults()  # bounded MLflow retries and timeouts before any client exists
    module, func = args.handler.split(":")
    # MLflow's store set-up logs at INFO on stderr; keep stderr for raypost's own one-line errors
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # ...and its SQL store logs every database error with a traceback before raising it; the
    # exception still reaches tracking_failure below, which prints it as one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    try:
        return getattr(importlib.import_module(module), func)(args) or 0
    except Interrupted as exc:
        print(f"raypost: {exc}", file=sys.stderr)
        return exc.exit_code
    except RaypostError as exc:
        print(f"raypost: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("raypost: interrupted; resume a sweep with --resume", file=sys.stderr)
        return 130
    except Exception as exc:
        line = tracking_failure(exc)
        if line is None:
            raise  # a bug: keep the traceback
        print(f"raypost: error: {line}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
