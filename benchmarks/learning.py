"""Time to accuracy on StepGame k = 1 (as DAWNBench measures it), through real raypost trials.

Each arm is one real trial (``run_sweep`` with one sample: Ray Tune, Ray Train, DeepSpeed, the
recipe, MLflow), trained on generated clean k = 1 stories and evaluated every ``--eval-every``
steps on the official clean k = 1 validation file (``../shared/data/stepgame/clean``; its first
``--eval-rows`` rows). Everything is read back from MLflow: ``eval_accuracy`` against the loop's
``train_s`` (wall seconds of the training loop, evaluations included) and ``cpu_s`` (CPU seconds
of every rank), and from those the time each arm takes to reach 0.5, 0.7 and 0.9.

Arms (equal DePT/PT budget: 40 x 384 = 15,360 parameters plus the 9-way head):

- ``finetune``: every MiniLM weight trains (the reference);
- ``pt``: vanilla prompt tuning, m = 40, r = 0;
- ``dept``: m = 20 and the rank the budget leaves (r = 16 at s = 96);
- ``readout-<mode>``: DePT as above with each classifier read-out (``--arms readout``), shorter.

    .venv/bin/python benchmarks/learning.py                              # the README block (~70 min here)
    .venv/bin/python benchmarks/learning.py --arms readout --steps 300   # the read-out comparison
    .venv/bin/python benchmarks/learning.py --smoke                      # seconds: tiny model, for tests

Writes ``results/learning.json`` (every evaluation) and ``.md``; rewrites the README block
``<!-- learning:begin -->`` .. ``<!-- learning:end -->`` (``--name`` picks another block).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "learning"
REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "data" / "stepgame" / "clean"
THRESHOLDS = (0.5, 0.7, 0.9)
READOUTS = ("pooler", "cls", "mean", "cls_pooler")

COMMON = {"model": "minilm", "train_data": "generate", "train_k": "1", "train_noise": False,
          "eval_k": "1", "max_input_length": 96, "lr_schedule": "linear", "warmup_ratio": 0.06}
BUDGET = 40 * 384
ARMS = {  # the tuned settings of each arm (docs/dept.md says how they were chosen)
    "finetune": ("finetune", {"ft_lr": 1e-4}),
    "pt": ("dept", {"prompt_length": 40, "lowrank_rank": 0, "lr_prompt": 3e-3, "lr_head": 3e-3}),
    "dept": ("dept", {"prompt_length": 20, "param_budget": BUDGET, "lr_prompt": 3e-3, "lr_lowrank": 3e-3,
                      "lr_head": 3e-3}),
}
SMOKE = {"model": "tiny:bert", "steps": 6, "eval_every": 3, "batch_size": 4, "train_per_k": 40, "eval_rows": 20}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=["finetune", "pt", "dept"],
                   help="finetune, pt, dept, readout-<mode>, or 'readout' for all four read-outs")
    p.add_argument("--steps", type=int, default=900, help="optimizer steps per arm")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (split over the workers)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=2.0)
    p.add_argument("--train-per-k", type=int, default=30000, help="generated training stories (never repeated "
                   "within --steps x --batch-size at the defaults)")
    p.add_argument("--eval-rows", type=int, default=500, help="rows of the official validation file evaluated")
    p.add_argument("--eval-data", default=str(OFFICIAL), help="official-format folder or file (k = 1 rows used)")
    p.add_argument("--model", default="minilm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=NAME, help="README block and results file name")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds not minutes ({SMOKE})")
    C.add_output_args(p)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.model, args.steps, args.eval_every = SMOKE["model"], SMOKE["steps"], SMOKE["eval_every"]
        args.batch_size, args.train_per_k, args.eval_rows = SMOKE["batch_size"], SMOKE["train_per_k"], SMOKE["eval_rows"]
    arms = []
    for arm in args.arms:
        arms += [f"readout-{r}" for r in READOUTS] if arm == "readout" else [arm]
    for arm in arms:
        if arm not in ARMS and not (arm.startswith("readout-") and arm.split("-", 1)[1] in READOUTS):
            p.error(f"--arms: unknown arm {arm!r} (finetune, pt, dept, readout, readout-<{'|'.join(READOUTS)}>)")
    args.arms = arms
    if args.batch_size % args.workers:
        p.error(f"--batch-size={args.batch_size} must split evenly over --workers={args.workers}")
    return args


def arm_config(args, arm: str) -> tuple[str, dict]:
    if arm.startswith("readout-"):
        method, fixed = "dept", {**ARMS["dept"][1], "readout": arm.split("-", 1)[1]}
    else:
        method, fixed = ARMS[arm][0], dict(ARMS[arm][1])
    if method == "finetune":
        fixed["max_input_length"] = COMMON["max_input_length"]
    flat = {**{k: v for k, v in COMMON.items() if method == "dept" or k != "max_input_length"}, **fixed,
            "model": args.model, "steps": args.steps, "eval_every": args.eval_every,
            "batch_size": args.batch_size // args.workers, "train_per_k": args.train_per_k, "data_seed": args.seed,
            "seed": args.seed, "eval_data": args.eval_data, "eval_per_k": args.eval_rows}
    if method == "finetune":
        flat["max_input_length"] = COMMON["max_input_length"]
    return method, flat


def run_arm(args, ray_ctx, arm: str, name: str) -> dict:
    from mlflow.tracking import MlflowClient

    from raypost.tracking.metric_keys import mlflow_key
    from raypost.train.launch import Scaling
    from raypost.tune.space import validate_space
    from raypost.tune.sweep import SweepOptions, run_sweep

    method, flat = arm_config(args, arm)
    raw = {"method": method, "samples": 1, "workers": args.workers, "scheduler": "fifo",
           "objectives": {"eval_accuracy": "max"}, "fixed": flat}
    space = validate_space(raw, method)
    opts = SweepOptions(name=name, storage=ray_ctx.storage, tracking_uri=ray_ctx.uri,
                        scaling=Scaling(workers=args.workers, cpus_per_worker=args.cpus_per_worker),
                        samples=1, scheduler="fifo", max_failures=0)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        results, _ = run_sweep(space, opts)
    wall = time.perf_counter() - t0
    errors = [str(r.error) for r in results if r.error]
    if errors:
        raise RuntimeError(f"{name}: the trial errored: {errors[0][:2000]}")
    client = MlflowClient(ray_ctx.uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string=f"tags.`raypost.sweep` = '{name}' and tags.`raypost.role` = 'trial'")
    hist = {key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, mlflow_key(key))}
            for key in ("eval_accuracy", "eval_loss", "train_s", "cpu_s", "tokens_per_s", "train_loss")}
    curve = [{"step": s, "accuracy": hist["eval_accuracy"][s], "eval_loss": hist["eval_loss"].get(s),
              "train_s": hist["train_s"].get(s), "cpu_s": hist["cpu_s"].get(s),
              "tokens_per_s": hist["tokens_per_s"].get(s), "train_loss": hist["train_loss"].get(s)}
             for s in sorted(hist["eval_accuracy"])]
    params = run.data.params
    config = {**flat, "eval_data": repo_relative(flat["eval_data"])}
    return {"arm": arm, "method": method, "config": config, "curve": curve, "wall_s": wall,
            "trainable_params": int(float(params.get("trainable_params", 0))),
            "readout": params.get("dept_readout"), "rank": params.get("dept_r"),
            "to_threshold": {str(t): first_reach(curve, t) for t in THRESHOLDS}}


def repo_relative(path: str) -> str:
    """A data path as the results files record it: relative to the repository, never the machine's."""
    return os.path.relpath(Path(path).resolve(), REPO)


def first_reach(curve: list[dict], threshold: float) -> dict | None:
    for point in curve:
        if point["accuracy"] >= threshold:
            return {"step": point["step"], "train_s": point["train_s"], "cpu_s": point["cpu_s"]}
    return None


def ratios(arms: dict) -> dict:
    out = {}
    for t in THRESHOLDS:
        d, p = (arms.get(a, {}).get("to_threshold", {}).get(str(t)) for a in ("dept", "pt"))
        out[str(t)] = C.ratio(d["train_s"], p["train_s"]) if d and p else None
    return out


def markdown(report: dict) -> str:
    meta, arms = report["meta"], report["arms"]
    mach = meta["machine"]
    out = [f"Command: `{meta['command']}`  ",
           f"Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), torch {mach.get('torch')}, DeepSpeed "
           f"{mach.get('deepspeed')}, Ray {mach.get('ray')}; {C.load_text(meta['load'], mach['nproc'])}; "
           f"{meta['date']}, {meta['elapsed_s'] / 60:.0f} min.  ",
           f"Setting: `{meta['model']}`, StepGame k = 1, {meta['train_per_k']:,} generated clean training stories, "
           f"{meta['steps']} steps of {meta['batch_size']} ({meta['workers']} worker(s) x "
           f"{meta['cpus_per_worker']:g} CPUs, one thread per CPU), linear warm-up (6%) then linear decay; "
           f"evaluated every {meta['eval_every']} steps on the first {meta['eval_rows']} rows of the official clean "
           "`qa1_valid.json`. Time = the training loop's wall seconds (evaluations included), CPU = all ranks.", "",
           "| arm | trainable | read-out | best acc | final acc | "
           + " | ".join(f"to {t}: s (CPU s)" for t in THRESHOLDS) + " | tokens/s |",
           "|---|--:|---|--:|--:|" + "--:|" * len(THRESHOLDS) + "--:|"]
    for name, a in arms.items():
        accs = [p["accuracy"] for p in a["curve"]]
        cells = []
        for t in THRESHOLDS:
            r = a["to_threshold"][str(t)]
            cells.append(f"{r['train_s']:.0f} ({r['cpu_s']:.0f})" if r else "not reached")
        tps = C.median([p["tokens_per_s"] for p in a["curve"] if p["tokens_per_s"]])
        out.append(f"| {name} | {a['trainable_params']:,} | {a['readout'] or '-'} | {max(accs):.3f} | {accs[-1]:.3f} | "
                   + " | ".join(cells) + f" | {C.fmt(tps)} |")
    out += ["", "Accuracy at each evaluation (step: accuracy @ seconds, train loss; ln 9 = 2.20 is chance, "
            "ln 2 = 0.69 is a model that knows the axis but guesses the side):", ""]
    for name, a in arms.items():
        out.append(f"- {name}: " + ", ".join(f"{p['step']}: {p['accuracy']:.3f} @ {p['train_s']:.0f} s, "
                                              f"loss {C.fmt(p.get('train_loss'))}" for p in a["curve"]))
    r = report["ratios"]
    if "dept" in arms and "pt" in arms:
        out += ["", "DePT's time to 0.7 / PT's: " + (C.fmt_ratio(r["0.7"]) if r.get("0.7") else
                                                     "not measurable (one of them never reached 0.7)")
                + "; to 0.5: " + (C.fmt_ratio(r["0.5"]) if r.get("0.5") else "not measurable") + "."]
        d, p = arms["dept"]["curve"][-1], arms["pt"]["curve"][-1]
        if d["step"] == p["step"] and d.get("train_s") and p.get("train_s"):
            out += [f"Same {d['step']} steps, DePT's time / PT's: {C.fmt_ratio(d['train_s'] / p['train_s'])}× wall, "
                    f"{C.fmt_ratio(d['cpu_s'] / p['cpu_s'])}× CPU (the shorter prompt: {d['train_s']:.0f} s vs "
                    f"{p['train_s']:.0f} s), at final accuracy {d['accuracy']:.3f} vs {p['accuracy']:.3f}."]
    out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started, t_start = datetime.now(timezone.utc), time.perf_counter()
    load = C.LoadSampler()
    load.sample()
    work = Path(tempfile.mkdtemp(prefix="learning-"))
    ray_ctx = C.RayContext(args, work, log)
    stamp = datetime.now().strftime("%H%M%S")
    arms = {}
    try:
        for arm in args.arms:
            load.sample()
            arms[arm] = run_arm(args, ray_ctx, arm, f"learn-{stamp}-{arm}")
            a = arms[arm]
            log(f"{arm}: " + ", ".join(f"{p['step']}: {p['accuracy']:.3f}@{p['train_s']:.0f}s" for p in a["curve"]))
    finally:
        ray_ctx.shutdown()
    load.sample()
    report = {"meta": {"benchmark": args.name, "command": C.command_line(f"{NAME}.py", args.argv),
                       "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": C.machine(), "load": load.summary(),
                       "model": args.model, "steps": args.steps, "eval_every": args.eval_every,
                       "batch_size": args.batch_size, "workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                       "train_per_k": args.train_per_k, "eval_rows": args.eval_rows,
                       "eval_data": repo_relative(args.eval_data),
                       "elapsed_s": time.perf_counter() - t_start},
              "arms": arms, "ratios": ratios(arms)}
    return C.write_outputs(args, args.name, report, markdown(report))


if __name__ == "__main__":
    main()
