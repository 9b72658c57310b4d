"""ASHA versus FIFO on the same search space and the same trial configurations.

Both schedulers run the same ``--trials`` configurations, in the same order: they are drawn once
per ``--seeds`` entry from the space with a seeded RNG and handed to the sweep as
``points_to_evaluate`` (so Optuna proposes exactly those, and the scheduler is the only
difference). Everything is read back from MLflow afterwards, as for any raypost sweep:

- compute = trial-steps, counted from each trial's ``train_loss`` history (one entry per step);
- the best score = the best value of the objective at any evaluation of any trial;
- compute (and wall clock) until the best score was first reached: all steps and evaluations
  of all trials are put on one time line by their MLflow timestamps, and the trial-steps
  logged up to the moment of that evaluation are counted;
- the same to a common target (the worse of the two schedulers' best scores, so both reach it).

Default: the synthetic recipe (a low-rank delta fitted to a fixed linear map, ``eval_loss``
minimised, learning rate searched log-uniformly over four decades, so some trials learn and some
cannot), 8 trials of 40 steps with an evaluation every 5, one worker per trial, as many trials at
once as the local Ray holds. ``--recipe dept`` runs tiny DePT (``tiny:bert``) instead.

    .venv/bin/python benchmarks/search_efficiency.py                  # ~5-8 min here
    .venv/bin/python benchmarks/search_efficiency.py --trials 16 --seeds 0 1 2 --steps 80
    .venv/bin/python benchmarks/search_efficiency.py --recipe dept --trials 6

Writes ``results/search_efficiency.json`` and ``.md``; rewrites the README block
``<!-- search_efficiency:begin -->`` .. ``<!-- search_efficiency:end -->``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "search_efficiency"
SCHEDULERS = ("fifo", "asha")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=("synthetic", "dept"), default="synthetic")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one pair of sweeps per seed")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray (default nproc + 1)")
    C.add_output_args(p)
    args = p.parse_args(argv)
    args.argv = list(argv)
    args.gpus_per_worker = 0.0
    return args


# ---- the space and its configurations -----------------------------------------------------------
def space_for(args) -> dict:
    if args.recipe == "synthetic":
        return {"method": "raypost.recipes.synthetic", "metric": "eval_loss", "mode": "min",
                "fixed": {"steps": args.steps, "eval_every": args.eval_every, "batch_size": 16, "dim": 16,
                          "delta_rank": 4},
                "search": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}}
    return {"method": "dept", "metric": "eval_loss", "mode": "min",
            "fixed": {"model": "tiny:bert", "steps": args.steps, "eval_every": args.eval_every, "batch_size": 8,
                      "prompt_length": 8, "lowrank_rank": 8, "max_input_length": 96, "train_k": "1",
                      "train_per_k": 200, "eval_k": "1", "eval_per_k": 50},
            "search": {"lr_head": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
                       "lr_prompt": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}}


def draw_points(search: dict, n: int, seed: int) -> list[dict]:
    """``n`` configurations drawn from the space with a seeded RNG (log ranges log-uniformly)."""
    rng = random.Random(seed)
    points = []
    for _ in range(n):
        point = {}
        for key, spec in search.items():
            if spec["type"] == "categorical":
                point[key] = rng.choice(spec["values"])
            elif spec.get("log"):
                point[key] = float(f"{math.exp(rng.uniform(math.log(spec['low']), math.log(spec['high']))):.4g}")
            elif spec["type"] == "int":
                point[key] = rng.randint(spec["low"], spec["high"])
            else:
                point[key] = float(f"{rng.uniform(spec['low'], spec['high']):.4g}")
        points.append(point)
    return points


# ---- analysis (pure) -----------------------------------------------------------------------------
def timeline(trials: list[dict], mode: str) -> list[dict]:
    """Every evaluation of every trial in time order, with the trial-steps spent by then (all
    trials) and the best score so far. ``trials``: [{"steps": {step: t}, "evals": [(step, value, t)]}]."""
    step_times = sorted(t for tr in trials for t in tr["steps"].values())
    evals = sorted(((t, v, i, s) for i, tr in enumerate(trials) for s, v, t in tr["evals"]))
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    out, best, j = [], None, 0
    for t, v, i, s in evals:
        while j < len(step_times) and step_times[j] <= t:
            j += 1
        if best is None or better(v, best):
            best = v
        out.append({"t": t, "trial": i, "step": s, "value": v, "best": best, "trial_steps": j})
    return out


def reach(line: list[dict], target: float, mode: str) -> dict | None:
    """The first evaluation at least as good as ``target``: when, and the trial-steps spent by then."""
    ok = (lambda v: v <= target) if mode == "min" else (lambda v: v >= target)
    return next(({"t": e["t"], "trial_steps": e["trial_steps"]} for e in line if ok(e["value"])), None)


def summarise_sweep(trials: list[dict], mode: str, t0: float, t_end: float, steps: int) -> dict:
    line = timeline(trials, mode)
    best = line[-1]["best"] if line else None
    at_best = reach(line, best, mode) if best is not None else None
    per_trial = [max(tr["steps"]) if tr["steps"] else 0 for tr in trials]
    return {"best": best, "trial_steps_total": sum(per_trial), "trial_steps_per_trial": per_trial,
            "stopped_early": sum(1 for n in per_trial if n < steps),
            "trial_steps_to_best": at_best["trial_steps"] if at_best else None,
            "wall_to_best_s": at_best["t"] - t0 if at_best else None, "wall_s": t_end - t0}


def compare(fifo: dict, asha: dict, fifo_line: list[dict], asha_line: list[dict], mode: str, t0s: dict) -> dict:
    """Both schedulers to the same target: the worse of their two best scores."""
    worse = max if mode == "min" else min
    target = worse(fifo["best"], asha["best"])
    out = {"target": target}
    for name, line in (("fifo", fifo_line), ("asha", asha_line)):
        r = reach(line, target, mode)
        out[name] = {"trial_steps": r["trial_steps"] if r else None, "wall_s": r["t"] - t0s[name] if r else None}
    return out


# ---- running -------------------------------------------------------------------------------------
def run_one(args, ray_ctx, space_raw: dict, points: list[dict], scheduler: str, name: str) -> dict:
    from mlflow.tracking import MlflowClient

    from raypost.tracking.metric_keys import mlflow_key
    from raypost.train.launch import Scaling
    from raypost.tune.space import validate_space
    from raypost.tune.sweep import SweepOptions, run_sweep

    raw = {"method": space_raw["method"], "samples": len(points), "scheduler": scheduler, "workers": args.workers,
           "objectives": {space_raw["metric"]: space_raw["mode"]}, "fixed": dict(space_raw["fixed"]),
           "search": space_raw["search"], "points_to_evaluate": points}
    space = validate_space(raw, raw["method"])
    opts = SweepOptions(name=name, storage=ray_ctx.storage, tracking_uri=ray_ctx.uri,
                        scaling=Scaling(workers=args.workers), samples=len(points), scheduler=scheduler,
                        max_failures=0)
    t0 = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        results, _ = run_sweep(space, opts)
    t_end = time.time()
    errors = [str(r.error) for r in results if r.error]
    if errors:
        raise RuntimeError(f"{name}: a trial errored: {errors[0][:2000]}")
    client = MlflowClient(ray_ctx.uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`raypost.sweep` = '{name}' and tags.`raypost.role` = 'trial'")
    metric = space_raw["metric"]
    trials = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        steps = {m.step: m.timestamp / 1000 for m in client.get_metric_history(run.info.run_id, mlflow_key("train_loss"))}
        evals = [(m.step, m.value, m.timestamp / 1000) for m in client.get_metric_history(run.info.run_id, mlflow_key(metric))]
        config = {k: run.data.params.get(k) for k in space_raw["search"]}
        trials.append({"trial": run.info.run_name, "config": config, "steps": steps, "evals": evals,
                       "stopped_early": run.data.tags.get("raypost.stopped_early"),
                       "start": run.info.start_time / 1000, "end": (run.info.end_time or 0) / 1000})
    summary = summarise_sweep(trials, space_raw["mode"], t0, t_end, args.steps)
    return {"scheduler": scheduler, "name": name, "t0": t0, "t_end": t_end, "summary": summary,
            "trials": [{**t, "steps": {str(k): v for k, v in t["steps"].items()}} for t in trials],
            "_trials": trials}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started, t_start = datetime.now(timezone.utc), time.perf_counter()
    space_raw = space_for(args)
    mode = space_raw["mode"]
    load = C.LoadSampler()
    load.sample()
    work = Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    ray_ctx = C.RayContext(args, work, log)
    stamp = datetime.now().strftime("%H%M%S")
    pairs = []
    try:
        for i, seed in enumerate(args.seeds):
            points = draw_points(space_raw["search"], args.trials, seed)
            order = SCHEDULERS if i % 2 == 0 else SCHEDULERS[::-1]  # alternate which goes first
            done = {}
            for sched in order:
                load.sample()
                res = run_one(args, ray_ctx, space_raw, points, sched, f"se-{stamp}-s{seed}-{sched}")
                s = res["summary"]
                log(f"seed {seed} {sched}: best {s['best']:.4g}, {s['trial_steps_total']} trial-steps "
                    f"({s['trial_steps_to_best']} to the best), {s['stopped_early']} stopped early, "
                    f"wall {s['wall_s']:.0f} s")
                done[sched] = res
            f, a = done["fifo"], done["asha"]
            cmp = compare(f["summary"], a["summary"], timeline(f.pop("_trials"), mode),
                          timeline(a.pop("_trials"), mode), mode, {"fifo": f["t0"], "asha": a["t0"]})
            pairs.append({"seed": seed, "points": points, "order": list(order), "fifo": f, "asha": a,
                          "common_target": cmp})
    finally:
        ray_ctx.shutdown()
    load.sample()
    report = {"meta": {"benchmark": NAME, "command": C.command_line(f"{NAME}.py", args.argv),
                       "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": C.machine(),
                       "load": load.summary(), "recipe": args.recipe, "space": space_raw,
                       "trials": args.trials, "steps": args.steps, "eval_every": args.eval_every,
                       "workers": args.workers, "ray_init_s": ray_ctx.init_s, "ray_num_cpus": ray_ctx.num_cpus,
                       "elapsed_s": time.perf_counter() - t_start},
              "pairs": pairs, "totals": totals(pairs)}
    markdown = render_markdown(report)
    return C.write_outputs(args, NAME, report, markdown)


def totals(pairs: list[dict]) -> dict:
    """ASHA / FIFO ratios per seed and their median."""
    out = {"compute_ratio": [], "compute_to_target_ratio": [], "wall_ratio": [], "wall_to_target_ratio": []}
    for p in pairs:
        f, a, c = p["fifo"]["summary"], p["asha"]["summary"], p["common_target"]
        out["compute_ratio"].append(C.ratio(a["trial_steps_total"], f["trial_steps_total"]))
        out["wall_ratio"].append(C.ratio(a["wall_s"], f["wall_s"]))
        out["compute_to_target_ratio"].append(C.ratio(c["asha"]["trial_steps"], c["fifo"]["trial_steps"]))
        out["wall_to_target_ratio"].append(C.ratio(c["asha"]["wall_s"], c["fifo"]["wall_s"]))
    return {k: {"per_seed": v, "median": C.median(v)} for k, v in out.items()}


def render_markdown(report: dict) -> str:
    meta, mach = report["meta"], report["meta"]["machine"]
    space = meta["space"]
    searched = ", ".join(f"{k} {v['low']:g}–{v['high']:g}{' (log)' if v.get('log') else ''}"
                         for k, v in space["search"].items())
    out = [f"Command: `{meta['command']}`  ",
           f"Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), Ray {mach.get('ray')}, Python {mach['python']}; "
           f"{C.load_text(meta['load'], mach['nproc'])}; {meta['date']}, {meta['elapsed_s']:.0f} s.  ",
           f"Space: `{space['method']}`, {meta['steps']} steps, evaluation every {meta['eval_every']} "
           f"({-(-meta['steps'] // meta['eval_every'])} reports), objective {space['metric']} ({space['mode']}), "
           f"searched {searched}; {meta['trials']} configurations per seed drawn once and given to both "
           f"schedulers as points_to_evaluate; {meta['workers']} worker per trial on a local Ray of "
           f"{meta['ray_num_cpus']} logical CPUs. ASHA as raypost configures it: time_attr training_iteration, "
           f"grace period = reports // 4, reduction factor 2, max_t = reports + 1.", "",
           "| seed | scheduler | best score | trial-steps | to the best | stopped early | wall s | to the best s "
           "| to common target: trial-steps | s |",
           "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for p in report["pairs"]:
        for sched in SCHEDULERS:
            s, c = p[sched]["summary"], p["common_target"][sched]
            out.append(f"| {p['seed']} | {sched.upper()} | {C.fmt(s['best'], 4)} | {s['trial_steps_total']} | "
                       f"{s['trial_steps_to_best']} | {s['stopped_early']} of {len(s['trial_steps_per_trial'])} | "
                       f"{s['wall_s']:.0f} | {C.fmt(s['wall_to_best_s'])} | {c['trial_steps']} | {C.fmt(c['wall_s'])} |")
    t = report["totals"]
    out += ["", f"ASHA / FIFO (median over {len(report['pairs'])} seed(s)): total trial-steps "
            f"{C.fmt_ratio(t['compute_ratio']['median'])}, trial-steps to the common target "
            f"{C.fmt_ratio(t['compute_to_target_ratio']['median'])}, wall clock {C.fmt_ratio(t['wall_ratio']['median'])}, "
            f"wall clock to the common target {C.fmt_ratio(t['wall_to_target_ratio']['median'])}. The common target "
            "is the worse of the two best scores of a seed, so both schedulers reach it."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
