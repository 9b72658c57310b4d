"""``raypost promote``, ``raypost predict`` and ``raypost ui``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from raypost import knobs
from raypost.errors import DataError


def cli_promote(args) -> int:
    from raypost.tracking.registry import promote
    from raypost.tracking.runs import client_for

    client = client_for(knobs.tracking_uri(args.tracking_uri))
    version, run, value = promote(client, args.target, args.name, args.metric, args.mode, args.alias)
    print(f"registered {args.name} version {version.version} from run {run.info.run_id} "
          f"({run.info.run_name}, {value}); alias {args.alias!r} -> version {version.version}")
    return 0


def read_rows(path: str) -> list[dict]:
    """JSONL rows (``story``/``question``), or a StepGame file in the official JSON format."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {path} does not exist")
    text = p.read_text()
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
    predictor = load_predictor(args.model_uri, tracking_uri=knobs.tracking_uri(args.tracking_uri))
    predictions = predictor.predict(rows)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for row, prediction in zip(rows, predictions):
            out.write(json.dumps({**{k: row[k] for k in ("source", "label") if k in row},
                                  "prediction": prediction}) + "\n")
    finally:
        if args.output:
            out.close()
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


def cli_ui(args) -> int:
    uri = knobs.tracking_uri(args.tracking_uri)
    cmd = ui_command(uri, args.port)
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", file=sys.stderr)
    os.execv(cmd[0], cmd)
    return 0  # not reached
