"""``raypost promote``, ``raypost predict``, ``raypost eval stepgame`` and ``raypost ui``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from raypost import knobs
from raypost.errors import ConfigError, DataError, TrackingError
from raypost.files import writable_dir, write_output


def cli_promote(args) -> int:
    from raypost.tracking.registry import promote
    from raypost.tracking.runs import client_for

    client = client_for(knobs.tracking_uri(args.tracking_uri), create=False)
    version, run, value = promote(client, args.target, args.name, args.metric, args.mode, args.alias)
    print(f"registered {args.name} version {version.version} from run {run.info.run_id} "
          f"({run.info.run_name}, {value}); alias {args.alias!r} -> version {version.version}")
    return 0


def read_rows(path: str) -> list[dict]:
    """JSONL rows (``story``/``question``), or a StepGame file in the official JSON format."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {path} does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"input file {path} is not UTF-8 text (byte {exc.start}); give JSONL rows or a "
                        "StepGame JSON file") from None
    except OSError as exc:
        raise DataError(f"input file {path}: cannot read ({exc.strerror})") from None
    if p.suffix == ".json":
        from raypost.stepgame import read_rows as read_stepgame

        return read_stepgame(p)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    if not rows:
        raise DataError(f"input file {path} has no rows")
    return rows


def cli_predict(args) -> int:
    from raypost.inference import load_predictor

    rows = read_rows(args.input)
    if args.output:  # before the model loads and predicts, not after
        if Path(args.output).is_dir():
            raise ConfigError(f"--output {args.output} is a directory; give a file path")
        writable_dir(Path(args.output).parent, "--output")
    predictor = load_predictor(args.model_uri, tracking_uri=knobs.tracking_uri(args.tracking_uri))
    predictions = predictor.predict(rows)
    text = "".join(json.dumps({**{k: row[k] for k in ("source", "label") if k in row}, "prediction": prediction})
                   + "\n" for row, prediction in zip(rows, predictions))
    if args.output:
        write_output(args.output, text, "--output")
    else:
        sys.stdout.write(text)
    labelled = [(r["label"], p) for r, p in zip(rows, predictions) if "label" in r]
    if labelled:
        correct = sum(label == p for label, p in labelled)
        print(f"accuracy {correct / len(labelled):.4f} on {len(labelled)} labelled rows", file=sys.stderr)
    return 0


def ui_command(tracking_uri: str, port: int) -> list[str]:
    # bound to loopback: the UI has no authentication (on a cluster, reach it via an SSH tunnel)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", "127.0.0.1", "--port", str(port),
            # one worker: a researcher's UI needs no parallel request handling, and each worker
            # process costs seconds of start-up and ~200 MB
            "--workers", "1"]


def experiment_links(tracking_uri: str, port: int) -> list[str]:
    """Per raypost experiment: a link to its training runs, then one per sweep to that sweep's
    trials with their hyperparameter and metric columns (``raypost.tracking.views``)."""
    from raypost.tracking.runs import EXPERIMENT_PREFIX
    from raypost.tracking.views import experiment_link, sweep_link, sweeps_with_views

    db = tracking_uri[len("sqlite:///"):] if tracking_uri.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():
        return []  # nothing tracked yet; do not create the store just to list it
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        lines = []
        for e in client.search_experiments():
            if e.name.startswith(EXPERIMENT_PREFIX):
                lines.append(f"  {e.name}: {experiment_link(port, e.experiment_id)}")
                lines += [f"    sweep {s}: {sweep_link(port, e.experiment_id, s)}" for s in sweeps_with_views(client, e)]
    except Exception:  # the UI itself will report a store it cannot open
        return []
    return lines


def cli_ui(args) -> int:
    uri = knobs.tracking_uri(args.tracking_uri)
    cmd = ui_command(uri, args.port)
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", file=sys.stderr)
    links = experiment_links(uri, args.port)
    if links:
        print("each raypost experiment's training runs, and each sweep's trials side by side:", *links, sep="\n",
              file=sys.stderr)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def cli_eval(args) -> int:
    if not args.adapter and not args.model:
        raise ConfigError("give --adapter or --model to evaluate")
    if args.run_id:  # the run must exist before minutes of evaluation, not after
        from raypost.tracking.runs import client_for

        try:
            client_for(knobs.tracking_uri(args.tracking_uri), create=False).get_run(args.run_id)
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(f"--run-id {args.run_id}: no such MLflow run at "
                                f"{knobs.tracking_uri(args.tracking_uri)} ({type(exc).__name__})") from None
    from raypost.stepgame import evaluate, load_stepgame, to_markdown, write_results

    writable_dir(args.out, "--out")  # before the evaluation, not after it
    ds = load_stepgame(args.data.split(","), limit_per_file=args.limit)
    from raypost.inference import load_predictor

    predictor = load_predictor(adapter=args.adapter, model=args.model, tracking_uri=args.tracking_uri)
    rows = ds.to_list()
    predictions = predictor.predict_stepgame([r["story"] for r in rows], [r["question"] for r in rows])
    result = evaluate(rows, predictions)
    paths = write_results(result, args.out)
    print(to_markdown(result))
    print(f"wrote {', '.join(map(str, paths))}")
    if args.run_id:
        _log_to_run(result, args.out, args.run_id, args.tracking_uri)
    return 0


def _log_to_run(result, out_dir, run_id: str, tracking_uri: str | None) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from raypost.stepgame import log_to_mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            log_to_mlflow(result, out_dir)
    except MlflowException as exc:
        raise TrackingError(f"cannot log to MLflow run {run_id!r} at {mlflow.get_tracking_uri()}: "
                            f"{str(exc).splitlines()[0]}") from None
    print(f"logged to MLflow run {run_id}")
