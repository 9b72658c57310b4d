"""What the platform costs: the same DePT training as plain PyTorch, DeepSpeed, a raypost trial, a sweep.

The same DePT recipe (``raypost.recipes.dept``: model, data, loss, evaluation) and the same
number of steps, evaluations and checkpoints, run four ways:

(a) plain PyTorch: ``recipe.setup`` + torch AdamW over ``setup.param_groups`` (+ gradient
    clipping, as DeepSpeed does), in a fresh process;
(b) DeepSpeed alone: the same, through ``deepspeed.initialize`` with raypost's DeepSpeed config
    (ZeRO stage 1, torch AdamW on CPU), world size 1 on a gloo process group, fresh process;
    checkpoints saved at every evaluation as the trial loop saves them; and once more with ZeRO
    stage 0 (b0), since ZeRO-1 (raypost's default) has nothing to shard on one worker;
(c) a raypost trial: ``run_sweep`` with one sample, FIFO, on Ray Train with DeepSpeed, with
    ``--workers`` 1 and 2 (Ray is started once, before; its start-up is reported on its own);
(d) a raypost sweep of ``--sweep-trials`` trials (one worker each, as many at once as fit).

Per-step time is measured inside each run, never from the run's wall clock: (a)/(b) record the
time at the end of every step, and for (c)/(d) the end of every step is the timestamp of the
``train_loss`` metric that rank 0 logs per step to MLflow (ms resolution). Intervals between
consecutive step ends are split into plain steps (the per-step cost) and intervals that follow an
evaluation (minus a plain step = the per-evaluation cost: evaluate, checkpoint, MLflow, report).
The start-up is launch -> start of the first step; the trial's start-up is split into phases with
the MLflow run timestamps and Ray Train's own structured logs (``logs/train/ray-train-sys-*.log``
in the Ray session). Component costs (DeepSpeed init, MLflow calls, checkpoint, ``log_model``)
are timed directly inside (b), and one extra (b) run profiles ``deepspeed.initialize`` with
cProfile.

Rounds are interleaved: every round runs (a), (b), (b0), (c, 1 worker), (c, 2 workers) once, in
an order that rotates from round to round; the tables report medians over rounds. Ratios are to (a).

    .venv/bin/python benchmarks/platform_overhead.py                    # default, tiny:bert (~8 min here)
    .venv/bin/python benchmarks/platform_overhead.py --model minilm --steps 40 --eval-every 20 --rounds 1
    .venv/bin/python benchmarks/platform_overhead.py --device cuda --model <HF id> --batch-size 32 \\
        --workers 1 2 4 8 --gpus-per-worker 1                            # on a GPU node

Writes ``results/platform_overhead.json`` (every sample) and ``.md`` and rewrites the block
between ``<!-- platform_overhead:begin -->`` and ``<!-- platform_overhead:end -->`` in the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "platform_overhead"
SCRIPT = Path(__file__).resolve()
MODES = ("a", "b", "b0", "c", "d")
LABELS = {"a": "(a) plain PyTorch", "b": "(b) DeepSpeed alone", "b0": "(b) DeepSpeed alone, ZeRO stage 0",
          "c": "(c) raypost trial", "d": "(d) raypost sweep"}


OBJECTIVE = ("eval_loss", "min")  # what the trials optimise: every eval improves it early on


# ---- arguments ---------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny:bert", help="DePT base model (tiny:bert, minilm, an HF id or path)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=8, help="micro-batch per worker")
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--lowrank-rank", type=int, default=16)
    p.add_argument("--max-input-length", type=int, default=96)
    p.add_argument("--train-per-k", type=int, default=200)
    p.add_argument("--eval-per-k", type=int, default=50)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (the trial config's device)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (a), (b), (c) per worker count")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="(c): Ray Train workers per trial")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="(c)/(d): CPUs per Ray Train worker; the worker runs one torch thread per CPU")
    p.add_argument("--name", default=NAME, help="results file and README block name")
    p.add_argument("--sweep-trials", type=int, default=3, help="(d): trials in the sweep (0 skips (d))")
    p.add_argument("--sweep-workers", type=int, default=1)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                   help="b0 = (b) with ZeRO stage 0 instead of raypost's default 1 (nothing to shard on 1 worker)")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile run of deepspeed.initialize")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in (a)/(b); Ray gives a 1-CPU worker OMP_NUM_THREADS=1")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray (default nproc + 1)")
    C.add_output_args(p)
    args = p.parse_args(argv)
    args.argv = list(argv)
    return args


def trial_config(args) -> dict:
    """The flat DePT trial config every mode trains with. Every evaluation improves eval_loss
    while the model is learning, so the trial logs its adapter at every evaluation (the common
    case early in a sweep, and the most the loop ever logs)."""
    return {"method": "dept", "model": args.model, "steps": args.steps, "eval_every": args.eval_every,
            "batch_size": args.batch_size, "prompt_length": args.prompt_length,
            "lowrank_rank": args.lowrank_rank, "max_input_length": args.max_input_length,
            "train_k": "1", "train_per_k": args.train_per_k, "eval_k": "1", "eval_per_k": args.eval_per_k,
            "device": args.device}


# ---- (a) and (b): a fresh process each -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_main(mode: str, cfg: dict, out: Path, threads: int, profile: bool, mlflow_dir: str | None) -> None:
    """Runs in a subprocess: imports, setup, (DeepSpeed init), the training loop; writes timings."""
    T = {"exec": time.time()}
    import torch

    torch.set_num_threads(threads)
    from raypost import knobs

    knobs.apply_defaults()  # the trial workers' environment (TORCH_EXTENSIONS_DIR: DeepSpeed's cached op)
    from raypost.recipes import get_recipe
    from raypost.recipes.train_config import TrainConfig
    from raypost.train.engine import initialize_engine, resolve_device

    if mode.startswith("b"):
        import deepspeed  # noqa: F401
        import torch.distributed as dist
    T["imports"] = time.time()
    train_cfg = TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
    torch.manual_seed(train_cfg.seed)
    device = resolve_device(train_cfg.device)
    recipe = get_recipe(train_cfg.method)
    setup = recipe.setup(cfg, 0, 1)
    T["setup"] = time.time()
    result: dict = {"mode": mode}
    if mode == "a":
        model = setup.model.to(device)
        optimizer = torch.optim.AdamW(setup.param_groups, weight_decay=train_cfg.weight_decay)
        params = [p for g in setup.param_groups for p in g["params"]]

        def train_step(batch):
            loss = setup.compute_loss(model, batch)
            loss.backward()
            if train_cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, train_cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        module, engine = model, None
    else:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        dist.init_process_group("gloo", init_method="env://", rank=0, world_size=1)  # as Ray Train does
        T["process_group"] = time.time()
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        # exactly as the trial loop builds it
        engine, optimizer = initialize_engine(setup.model, setup.param_groups, train_cfg, 1, device)
        if prof is not None:
            prof.disable()
            result["profile"] = profile_top(prof)
        T["deepspeed_init"] = time.time()
        result["optimizer"] = type(optimizer).__name__

        def train_step(batch):
            loss = setup.compute_loss(engine, batch)
            engine.backward(loss)
            engine.step()
            return loss

        module = engine.module
    step_end, evals, checkpoints = {}, [], []
    work = Path(tempfile.mkdtemp(prefix="po-child-"))
    for step in range(1, train_cfg.steps + 1):
        batch = {k: v.to(device) for k, v in next(setup.train_batches).items()}
        loss = train_step(batch)
        float(loss.detach())
        step_end[step] = time.time()
        if C.is_eval_step(step, train_cfg.eval_every, train_cfg.steps):
            t = time.perf_counter()
            setup.evaluate(module)
            evals.append(time.perf_counter() - t)
            if engine is not None:  # what the trial loop writes at every report, minus Ray and MLflow
                t = time.perf_counter()
                ckpt = work / f"ckpt{step}"
                engine.save_checkpoint(str(ckpt / "deepspeed"), tag="state", exclude_frozen_parameters=True)
                setup.save_adapter(module, ckpt / "adapter")
                checkpoints.append(time.perf_counter() - t)
    T["steps_done"] = time.time()
    if setup.final_evaluate is not None:
        setup.final_evaluate(module, work / "final")
    T["end"] = time.time()
    if mlflow_dir and engine is not None:
        result["mlflow"] = mlflow_costs(Path(mlflow_dir), work / f"ckpt{train_cfg.steps}" / "adapter", cfg, setup)
    result.update(times=T, step_end={str(k): v for k, v in step_end.items()}, eval_s=evals,
                  checkpoint_s=checkpoints, trainable_params=setup.params.get("trainable_params"))
    out.write_text(json.dumps(result))


def mlflow_costs(store: Path, adapter_dir: Path, cfg: dict, setup) -> dict:
    """What rank 0's MLflow calls cost in a trial, timed one by one on a SQLite store (the default)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from raypost.tracking.registry import log_adapter_model

    uri = f"sqlite:///{store / 'mlflow.db'}"
    out = {}
    # the trial's store exists before its workers start: create it untimed, then time what a
    # worker does (a client on an existing store, its first call, the params)
    subprocess.run([sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
                    "c = MlflowClient(sys.argv[1]); e = c.create_experiment('bench', artifact_location=sys.argv[2]); "
                    "print(c.create_run(e).info.run_id)", uri, (store / "art").as_uri()],
                   check=True, capture_output=True, text=True)
    t = time.perf_counter()
    client = MlflowClient(uri)
    run_id = client.search_runs([client.get_experiment_by_name("bench").experiment_id])[0].info.run_id
    out["client_first_call_s"] = time.perf_counter() - t
    t = time.perf_counter()
    client.get_run(run_id)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in {**cfg, **setup.params}.items()])
    out["log_params_s"] = time.perf_counter() - t
    now = int(time.time() * 1000)
    window = [Metric(k, 1.0, now, s) for s in range(20)  # the keys a DePT trial logs per step
              for k in ("train/loss", "train/lr_prompt", "train/lr_lowrank", "train/lr_head")]
    t = time.perf_counter()
    client.log_batch(run_id, metrics=window)
    out["log_batch_80_metrics_s"] = time.perf_counter() - t
    t = time.perf_counter()
    client.log_artifacts(run_id, str(adapter_dir), artifact_path="adapter")
    out["log_artifacts_adapter_s"] = time.perf_counter() - t
    out["log_model_s"] = []
    for _ in range(3):  # the first call in a process imports mlflow.pyfunc, cloudpickle, ...
        t = time.perf_counter()
        log_adapter_model(run_id, uri, adapter_dir)
        out["log_model_s"].append(time.perf_counter() - t)
    return out


def profile_top(prof, n: int = 14) -> list[dict]:
    """The heaviest calls under deepspeed.initialize by cumulative time (import machinery left out)."""
    import pstats

    stats = pstats.Stats(prof).stats
    rows = []
    for (path, line, func), (_, _, tt, ct, _) in stats.items():
        if path.startswith("<") or "importlib" in path or func.startswith("<"):
            continue
        # library files by their package path, raypost's by their path in the repository: no
        # absolute path of the machine that ran it goes into the recorded results
        short = path.split("site-packages/")[-1]
        repo = str(C.HERE.parent) + "/"
        if short.startswith(repo):
            short = short[len(repo):]
        rows.append({"function": f"{short}:{line}({func})", "cumulative_s": ct, "own_s": tt})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:n]


def run_child(mode: str, cfg: dict, args, profile: bool = False, mlflow: bool = True) -> dict:
    out = Path(tempfile.mkdtemp(prefix="po-")) / "result.json"
    cmd = [sys.executable, str(SCRIPT), "--child", mode, json.dumps(cfg), str(out), str(args.threads),
           "1" if profile else "0", str(out.parent) if mlflow else ""]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    t_launch = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t_exit = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"({mode}) failed:\n{proc.stderr[-3000:]}")
    res = json.loads(out.read_text())
    res.update(t_launch=t_launch, t_exit=t_exit)
    return summarise_child(res, cfg)


def summarise_child(res: dict, cfg: dict) -> dict:
    T = res["times"]
    step_end = {int(k): v for k, v in res["step_end"].items()}
    iv = C.split_intervals(step_end, cfg["eval_every"], cfg["steps"])
    step_s = iv["step_s"]
    first_start = step_end[1] - step_s
    phases = {"process start + imports": T["imports"] - res["t_launch"], "recipe.setup": T["setup"] - T["imports"]}
    if "deepspeed_init" in T:
        phases["process group"] = T["process_group"] - T["setup"]
        phases["deepspeed.initialize"] = T["deepspeed_init"] - T["process_group"]
    return {"mode": res["mode"], "startup_s": first_start - res["t_launch"], "step_s": step_s,
            "step_quartiles": iv["step_quartiles"], "eval_extra_s": iv["eval_extra_s"],
            "evaluate_s": C.median(res["eval_s"]), "checkpoint_s": C.median(res["checkpoint_s"]),
            # (b) times its MLflow calls after T["end"]; they are reported as components, not here
            "end_s": T["end"] - step_end[max(step_end)], "total_s": T["end"] - res["t_launch"],
            "phases": phases, "n_plain": len(iv["plain"]), "n_after_eval": len(iv["after_eval"]),
            "world": 1, "optimizer": res.get("optimizer"), "mlflow": res.get("mlflow"),
            "profile": res.get("profile"), "trainable_params": res.get("trainable_params"),
            "raw": {"plain": iv["plain"], "after_eval": iv["after_eval"], "eval_s": res["eval_s"],
                    "checkpoint_s": res["checkpoint_s"], "times": T}}


# ---- (c) and (d): through run_sweep ----------------------------------------------------------------
class RayContext:
    def __init__(self, args, work: Path, log):
        import ray

        from raypost import knobs

        knobs.apply_defaults()
        num_cpus = args.num_cpus or (os.cpu_count() or 1) + 1
        t = time.perf_counter()
        # address="local": always a Ray of our own, never another user's cluster on this machine
        ray.init(address="local", num_cpus=num_cpus, num_gpus=None if args.gpus_per_worker else 0,
                 runtime_env={"env_vars": knobs.worker_env()}, log_to_driver=False)
        self.init_s = time.perf_counter() - t
        self.num_cpus = num_cpus
        try:
            self.session_dir = ray._private.worker._global_node.get_session_dir_path()
        except Exception:  # private API: the phase breakdown is then coarser
            self.session_dir = None
        self.uri = f"sqlite:///{work / 'mlflow.db'}"
        self.storage = str(work / "ray")
        log(f"Ray started in {self.init_s:.1f} s ({num_cpus} logical CPUs), session {self.session_dir}")

    def shutdown(self):
        import ray

        ray.shutdown()


def run_raypost(args, ray_ctx: RayContext, cfg: dict, name: str, workers: int, samples: int) -> dict:
    from raypost.train.launch import Scaling
    from raypost.tune.space import validate_space
    from raypost.tune.sweep import SweepOptions, run_sweep

    raw = {"method": "dept", "samples": samples, "scheduler": "fifo", "workers": workers,
           "objectives": {OBJECTIVE[0]: OBJECTIVE[1]}, "fixed": dict(cfg)}
    if samples > 1:  # a real sweep: a searched key, the same values every time (points_to_evaluate)
        values = [round(3e-3 * 2 ** i, 6) for i in range(samples)]
        raw["search"] = {"lr_head": {"type": "categorical", "values": values}}
        raw["points_to_evaluate"] = [{"lr_head": v} for v in values]
        raw["fixed"].pop("lr_head", None)
    space = validate_space(raw, "dept")
    opts = SweepOptions(name=name, storage=ray_ctx.storage, tracking_uri=ray_ctx.uri,
                        scaling=Scaling(workers=workers, cpus_per_worker=args.cpus_per_worker,
                                        gpus_per_worker=args.gpus_per_worker),
                        samples=samples, scheduler="fifo", max_failures=0)
    t_call = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables
        results, _ = run_sweep(space, opts)
    t_return = time.time()
    errors = [str(r.error) for r in results if r.error]
    if errors:
        raise RuntimeError(f"{name}: trial errored: {errors[0][:2000]}")
    return analyse_sweep(ray_ctx, name, cfg, t_call, t_return, workers)


def analyse_sweep(ray_ctx: RayContext, name: str, cfg: dict, t_call: float, t_return: float, workers: int) -> dict:
    from mlflow.tracking import MlflowClient

    from raypost.tracking.metric_keys import mlflow_key

    client = MlflowClient(ray_ctx.uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`raypost.sweep` = '{name}'")
    (parent,) = [r for r in runs if r.data.tags["raypost.role"] == "sweep"]
    trials = sorted((r for r in runs if r.data.tags["raypost.role"] == "trial"), key=lambda r: r.info.start_time)
    logs = C.read_train_logs(ray_ctx.session_dir)
    metric = OBJECTIVE[0]
    out = []
    single = len(trials) == 1
    for run in trials:
        rid = run.info.run_id
        loss_t = C.mlflow_step_times(client.get_metric_history(rid, mlflow_key("train_loss")))
        eval_t = C.mlflow_step_times(client.get_metric_history(rid, mlflow_key(metric)))
        best_t = C.mlflow_step_times(client.get_metric_history(rid, mlflow_key(f"best_{metric}")))
        iv = C.split_intervals(loss_t, cfg["eval_every"], cfg["steps"])
        step_s = iv["step_s"]
        trial_start, trial_end = run.info.start_time / 1000, run.info.end_time / 1000
        events = C.parse_train_logs(logs, run.info.run_name)
        phases = C.trial_phases(t_call if single else None, parent.info.start_time / 1000 if single else None,
                                trial_start, events, loss_t[min(loss_t)], step_s, loss_t[max(loss_t)], trial_end,
                                t_return if single else None)
        # the evaluation steps, split with the metrics rank 0 logs around the report
        evaluate, log_adapter, report = [], [], []
        for s in sorted(eval_t):
            evaluate.append(eval_t[s] - loss_t[s])
            after = best_t.get(s, eval_t[s])
            if s in best_t:
                log_adapter.append(best_t[s] - eval_t[s])
            if s + 1 in loss_t:
                report.append(loss_t[s + 1] - after - step_s)
        first_start = loss_t[min(loss_t)] - step_s
        out.append({
            "trial": run.info.run_name, "world": workers, "step_s": step_s, "step_quartiles": iv["step_quartiles"],
            "eval_extra_s": iv["eval_extra_s"], "n_plain": len(iv["plain"]), "n_after_eval": len(iv["after_eval"]),
            "startup_s": first_start - (t_call if single else trial_start),
            "trial_startup_s": first_start - trial_start,
            "end_s": (t_return if single else trial_end) - loss_t[max(loss_t)],
            "total_s": (t_return - t_call) if single else trial_end - trial_start,
            "trial_window": [trial_start, trial_end], "phases": phases, "ray_events": events,
            "evaluate_s": C.median(evaluate), "flush_checkpoint_log_adapter_s": C.median(log_adapter),
            "report_s": C.median(report), "n_adapter_logs": len(log_adapter),
            "optimizer": run.data.params.get("optimizer"),
            "raw": {"plain": iv["plain"], "after_eval": iv["after_eval"], "evaluate": evaluate,
                    "log_adapter": log_adapter, "report": report},
        })
    windows = [t["trial_window"] for t in out]
    return {"name": name, "workers": workers, "t_call": t_call, "t_return": t_return, "wall_s": t_return - t_call,
            "sweep_run_s": (parent.info.end_time - parent.info.start_time) / 1000,
            "max_concurrent_trials": max_overlap(windows), "trials": out}


def max_overlap(windows: list[list[float]]) -> int:
    events = sorted([(a, 1) for a, _ in windows] + [(b, -1) for _, b in windows], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


# ---- summary -------------------------------------------------------------------------------------
ROW_KEYS = ("startup_s", "step_s", "eval_extra_s", "end_s", "total_s")


def summarise(runs: dict[str, list[dict]], cfg: dict) -> list[dict]:
    """One row per mode: medians over rounds, ratios to (a), and the decomposition of the extra
    wall clock over (a): start-up, steps, evaluations, end."""
    rows = []
    for key, samples in runs.items():
        row = {"key": key, "label": samples[0]["label"], "world": samples[0]["world"], "n": len(samples)}
        for k in ROW_KEYS:
            row[k] = C.median([s[k] for s in samples])
        row["samples_per_s"] = C.ratio(cfg["batch_size"] * row["world"], row["step_s"])
        rows.append(row)
    base = next((r for r in rows if r["key"] == "a"), None)
    n_evals = sum(1 for s in range(1, cfg["steps"] + 1) if C.is_eval_step(s, cfg["eval_every"], cfg["steps"]))
    for row in rows:
        row["x_a"] = {k: C.ratio(row[k], base[k]) if base else None for k in ROW_KEYS}
        if base and row is not base and None not in (row["step_s"], base["step_s"]):
            d_eval = (row["eval_extra_s"] or 0) - (base["eval_extra_s"] or 0)
            row["extra_vs_a"] = {
                "startup_s": row["startup_s"] - base["startup_s"],
                "steps_s": cfg["steps"] * (row["step_s"] - base["step_s"]),
                "evals_s": n_evals * d_eval, "end_s": row["end_s"] - base["end_s"],
                "total_s": row["total_s"] - base["total_s"]}
    return rows


def render_markdown(report: dict) -> str:
    meta, rows = report["meta"], report["rows"]
    cfg, mach = meta["config"], meta["machine"]
    out = [f"Command: `{meta['command']}`  ",
           f"Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), torch {mach.get('torch')}, DeepSpeed "
           f"{mach.get('deepspeed')}, Ray {mach.get('ray')}, MLflow {mach.get('mlflow')} (SQLite store), Python "
           f"{mach['python']}; {C.load_text(meta['load'], mach['nproc'])}; {meta['date']}, {meta['elapsed_s']:.0f} s.  ",
           f"Work: DePT on `{cfg['model']}` (classifier, m = {cfg['prompt_length']}, r = {cfg['lowrank_rank']}, "
           f"s = {cfg['max_input_length']}, {meta.get('trainable_params', '?')} trainable parameters), {cfg['steps']} "
           f"steps of batch {cfg['batch_size']} per worker, evaluation + checkpoint every {cfg['eval_every']} steps "
           f"({cfg['eval_per_k']} examples), device {cfg['device']}, {meta['threads']} torch thread(s) in (a)/(b), "
           f"{meta.get('cpus_per_worker', 1):g} CPU(s) and as many threads per worker in (c)/(d); "
           f"medians of {meta['rounds']} interleaved round(s)."
           + (f" Ray start-up (paid by every `raypost sweep` that starts its own Ray, not counted below): "
              f"{meta['ray_init_s']:.1f} s." if meta.get("ray_init_s") is not None else ""), ""]
    out += ["| run | workers | start-up s | ×(a) | step ms | ×(a) | samples/s | per-eval s | ×(a) | end s | total s | ×(a) |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        x = r["x_a"]
        out.append(" | ".join([
            f"| {r['label']}", str(r["world"]), C.fmt(r["startup_s"]), C.fmt_ratio(x["startup_s"]),
            C.fmt(r["step_s"] * 1000 if r["step_s"] else None), C.fmt_ratio(x["step_s"]),
            C.fmt(r["samples_per_s"]), C.fmt(r["eval_extra_s"]), C.fmt_ratio(x["eval_extra_s"]),
            C.fmt(r["end_s"]), C.fmt(r["total_s"]), C.fmt_ratio(x["total_s"])]) + " |")
    out += ["", "Start-up = launch (process start, or the `run_sweep` call) → start of the first step; step = median "
            "interval between consecutive step ends without an evaluation in between; per-eval = median extra "
            "time of an interval that follows an evaluation (evaluate; (b) + checkpoint; (c) + MLflow flush, "
            "checkpoint, adapter logging, `ray.train.report`); end = last step → the run's work done ((a)/(b): "
            "final StepGame evaluation; (c): last report, final evaluation, worker shutdown, sweep summary, i.e. "
            "`run_sweep` returned); total = launch → end. (d) rows are per trial: start-up from the trial's MLflow "
            "run creation, total = the trial run's lifetime."]
    extra = [r for r in rows if r.get("extra_vs_a")]
    if extra:
        out += ["", "Where the extra wall clock over (a) goes (s; steps = steps × Δstep, evaluations = evaluations "
                "× Δper-eval):", "",
                "| run | workers | start-up | steps | evaluations | end | total |", "|---|--:|--:|--:|--:|--:|--:|"]
        for r in extra:
            e = r["extra_vs_a"]
            out.append(f"| {r['label']} | {r['world']} | {e['startup_s']:+.1f} | {e['steps_s']:+.2f} | "
                       f"{e['evals_s']:+.2f} | {e['end_s']:+.1f} | {e['total_s']:+.1f} |")
    phases = report.get("trial_phases")
    if phases:
        keys = list(next(iter(phases.values())))
        out += ["", "Start-up of a raypost trial, by phase (s, medians over rounds; from MLflow run and metric "
                "timestamps and Ray Train's structured logs):", "",
                "| phase | " + " | ".join(f"{w} worker(s)" for w in phases) + " |",
                "|---|" + "--:|" * len(phases)]
        for k in keys:
            out.append(f"| {k} | " + " | ".join(C.fmt(phases[w].get(k)) for w in phases) + " |")
    comp = report.get("components")
    if comp:
        out += ["", "Component costs, timed one by one (s, medians over rounds; (b) runs in a fresh process, "
                "the trial's in-report split from rank 0's metric timestamps):", "",
                "| component | s |", "|---|--:|"]
        out += [f"| {k} | {C.fmt(v)} |" for k, v in comp.items()]
    prof = report.get("profile")
    if prof:
        out += ["", f"cProfile of `deepspeed.initialize` in (b) ({prof['total_s']:.1f} s in that run; cumulative "
                "time of the heaviest calls):", ""]
        out += [f"- `{p['function']}` {p['cumulative_s']:.2f} s" for p in prof["top"][:8]]
    sweep = report.get("sweep")
    if sweep:
        out += ["", f"(d) sweep of {sweep['trials']} trials × {sweep['workers']} worker: wall {sweep['wall_s']:.0f} s "
                f"({sweep['wall_s'] / sweep['trials']:.1f} s per trial; up to {sweep['max_concurrent_trials']} "
                f"trials at once), against {sweep['trials']} × (a) = {sweep['a_equivalent_s']:.0f} s run one "
                f"after another."]
    return "\n".join(x for x in out if x is not None) + "\n"


# ---- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        mode, cfg, out, threads, profile, mlflow_dir = argv[1:7]
        child_main(mode, json.loads(cfg), Path(out), int(threads), profile == "1", mlflow_dir or None)
        return {}
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    cfg = trial_config(args)
    load = C.LoadSampler()
    load.sample()
    work = Path(tempfile.mkdtemp(prefix="platform-overhead-"))
    runs: dict[str, list[dict]] = {}
    ray_ctx = None
    order: list[tuple[str, int | None]] = []
    for m in args.modes:
        if m in ("a", "b", "b0"):
            order.append((m, None))
        elif m == "c":
            order += [("c", w) for w in args.workers]
    stamp = datetime.now().strftime("%H%M%S")
    try:
        if any(m in ("c", "d") for m in args.modes):
            ray_ctx = RayContext(args, work, log)
        for rnd in range(args.rounds):
            k = rnd % len(order)
            for mode, workers in order[k:] + order[:k]:
                load.sample()
                t = time.perf_counter()
                if mode in ("a", "b", "b0"):
                    res = run_child(mode, {**cfg, "zero_stage": 0} if mode == "b0" else cfg, args,
                                    mlflow=(mode == "b"))
                    key = mode
                else:
                    sweep = run_raypost(args, ray_ctx, cfg, f"po-{stamp}-c{workers}-r{rnd}", workers, 1)
                    res = sweep["trials"][0]
                    res["sweep"] = {k2: v for k2, v in sweep.items() if k2 != "trials"}
                    key = f"c{workers}"
                res["label"] = LABELS[mode if mode in LABELS else mode[0]]
                res["round"] = rnd
                runs.setdefault(key, []).append(res)
                log(f"round {rnd + 1}/{args.rounds} {key}: start-up {res['startup_s']:.1f} s, step "
                    f"{1000 * res['step_s']:.1f} ms, per-eval {res['eval_extra_s'] or 0:.2f} s, total "
                    f"{res['total_s']:.1f} s ({time.perf_counter() - t:.0f} s)")
        sweep_summary = None
        if "d" in args.modes and args.sweep_trials:
            load.sample()
            sweep = run_raypost(args, ray_ctx, cfg, f"po-{stamp}-d", args.sweep_workers, args.sweep_trials)
            for tr in sweep["trials"]:
                tr["label"] = "(d) sweep, per trial"
            runs["d"] = sweep["trials"]
            sweep_summary = {k: v for k, v in sweep.items() if k != "trials"}
            sweep_summary["trials"] = len(sweep["trials"])
            log(f"sweep of {len(sweep['trials'])}: wall {sweep['wall_s']:.0f} s")
        profile = None
        if "b" in args.modes and not args.no_profile:
            load.sample()
            res = run_child("b", cfg, args, profile=True, mlflow=False)
            profile = {"total_s": res["phases"]["deepspeed.initialize"], "top": res["profile"]}
    finally:
        if ray_ctx is not None:
            ray_ctx.shutdown()
    load.sample()
    rows = summarise(runs, cfg)
    report = {"meta": {
        "benchmark": args.name, "command": C.command_line(f"{NAME}.py", args.argv),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": C.machine(), "load": load.summary(),
        "config": cfg, "rounds": args.rounds, "threads": args.threads,
        "cpus_per_worker": args.cpus_per_worker,
        "ray_init_s": ray_ctx.init_s if ray_ctx else None, "ray_num_cpus": ray_ctx.num_cpus if ray_ctx else None,
        "trainable_params": next((s.get("trainable_params") for v in runs.values() for s in v
                                  if s.get("trainable_params")), None),
        "elapsed_s": time.perf_counter() - t0}, "rows": rows, "runs": runs, "profile": profile}
    report["trial_phases"] = trial_phase_table(runs)
    report["components"] = component_table(runs)
    if sweep_summary:
        a = next((r for r in rows if r["key"] == "a"), None)
        sweep_summary["a_equivalent_s"] = sweep_summary["trials"] * a["total_s"] if a else float("nan")
        sweep_summary["workers"] = args.sweep_workers
        report["sweep"] = sweep_summary
    markdown = render_markdown(report)
    return C.write_outputs(args, args.name, report, markdown)


def trial_phase_table(runs: dict) -> dict:
    """worker count -> phase -> median seconds, over the (c) rounds."""
    table = {}
    for key, samples in runs.items():
        if not key.startswith("c"):
            continue
        names = list(samples[0]["phases"])
        table[str(samples[0]["world"])] = {n: C.median([s["phases"].get(n) for s in samples]) for n in names}
    return table


def component_table(runs: dict) -> dict:
    comp = {}
    b = runs.get("b", [])
    if b:
        for name in ("process start + imports", "recipe.setup", "process group", "deepspeed.initialize"):
            comp[f"(b) {name}"] = C.median([s["phases"].get(name) for s in b])
        b0 = runs.get("b0", [])
        if b0:
            comp["(b, ZeRO stage 0) deepspeed.initialize"] = C.median([s["phases"].get("deepspeed.initialize") for s in b0])
        comp["(a) evaluate (recipe, per evaluation)"] = C.median([s["evaluate_s"] for s in runs.get("a", [])])
        comp["(b) save_checkpoint + save_adapter (per evaluation)"] = C.median([s["checkpoint_s"] for s in b])
        ml = [s["mlflow"] for s in b if s.get("mlflow")]
        if ml:
            for k in ("client_first_call_s", "log_params_s", "log_batch_80_metrics_s", "log_artifacts_adapter_s"):
                comp[f"MLflow {k[:-2]}"] = C.median([m[k] for m in ml])
            comp["MLflow log_model (pyfunc), first in a process"] = C.median([m["log_model_s"][0] for m in ml])
            comp["MLflow log_model (pyfunc), later calls"] = C.median([x for m in ml for x in m["log_model_s"][1:]])
    for key, samples in runs.items():
        if key.startswith("c"):
            w = samples[0]["world"]
            comp[f"({key[0]}, {w} worker) evaluate (rank 0, per evaluation)"] = C.median([s["evaluate_s"] for s in samples])
            comp[f"({key[0]}, {w} worker) flush + checkpoint + log adapter (per improvement)"] = C.median(
                [s["flush_checkpoint_log_adapter_s"] for s in samples])
            comp[f"({key[0]}, {w} worker) ray.train.report → next step starts"] = C.median(
                [s["report_s"] for s in samples])
    return comp


if __name__ == "__main__":
    main()
