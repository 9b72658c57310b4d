"""Handlers for ``raypost data stepgame*`` and ``raypost eval stepgame`` (flags: raypost/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from raypost.errors import ConfigError, TrackingError
from raypost.stepgame.checker import check_rows, format_table, summarize
from raypost.stepgame.convert import to_instruction_rows
from raypost.stepgame.evaluate import evaluate, log_to_mlflow, to_markdown, write_results
from raypost.stepgame.generator import MAX_K, generate
from raypost.stepgame.loader import load_stepgame, save_stepgame


def parse_ks(text: str) -> list[int]:
    """'1-10' or '1,3,5' (or a mix) -> sorted k values in 1..MAX_K."""
    ks = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            ks.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"--k={text!r} is not a list of k values like 1-10 or 1,3,5") from None
    if not ks or min(ks) < 1 or max(ks) > MAX_K:
        raise ConfigError(f"--k={text!r} must name k values between 1 and {MAX_K}")
    return sorted(ks)


def cli_generate(args) -> int:
    ks = parse_ks(args.k)
    if args.n < 1:
        raise ConfigError(f"--n={args.n} must be at least 1")
    for k in ks:
        rows = generate(k, args.n, noise=args.noise, seed=args.seed, split=args.split)
        path = save_stepgame(rows, Path(args.out) / f"qa{k}_{args.split}.json",
                             extra_fields=("k", "hops", "noisy", "noise_nodes"))
        print(f"wrote {path} ({len(rows)} examples)")
    return 0


def cli_check(args) -> int:
    rows = load_stepgame(args.inputs).to_list()
    print(format_table(summarize(check_rows(rows), rows)))
    return 0


def cli_to_instructions(args) -> int:
    rows = to_instruction_rows(load_stepgame(args.inputs))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out} ({len(rows)} rows)")
    return 0


def cli_eval(args) -> int:
    if not args.adapter and not args.model:
        raise ConfigError("give --adapter or --model to evaluate")
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

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            log_to_mlflow(result, out_dir)
    except MlflowException as exc:
        raise TrackingError(f"cannot log to MLflow run {run_id!r} at {mlflow.get_tracking_uri()}: "
                            f"{str(exc).splitlines()[0]}") from None
    print(f"logged to MLflow run {run_id}")
