"""Data-parallel scaling of a DePT trial: step time with 1 and 2 workers, and the formula for N.

Each world size runs as that many fresh processes on a gloo process group (as Ray Train sets it
up), each rank doing exactly what a trial worker does per step: ``recipe.setup(cfg, rank,
world)`` (its shard of the data), ``deepspeed.initialize`` with raypost's DeepSpeed config
(ZeRO stage 1), then timed steps (forward, ``engine.backward``, ``engine.step``) plus the loss
all-reduce the trial loop adds for logging. After the steps rank 0 times ``all_reduce`` of the
payloads that matter: the trainable parameters (what DePT's gradients all-reduce: prompt,
low-rank pair, head), the whole model (what full fine-tuning would all-reduce) and one float
(the logged loss). World sizes alternate round by round; medians over rounds and steps.

No Ray here: Ray's per-step cost is measured by ``platform_overhead.py`` ((c) with 1 and 2
workers). This script isolates the data-parallel arithmetic so it can be extrapolated:

    t_step(N) = t_compute(b) + t_optimizer + t_allreduce(P_trainable, N) + t_allreduce(1 float, N) + t_platform
    t_allreduce(P, N) ~= 2 (N-1) alpha + 2 (N-1)/N * 4P / beta          (ring all-reduce, fp32)

    .venv/bin/python benchmarks/scaling.py                         # tiny:bert and MiniLM (~4 min here)
    .venv/bin/python benchmarks/scaling.py --models minilm --world-sizes 1 2 --steps 40 --rounds 3

Writes ``results/scaling.json`` and ``.md``; rewrites the README block ``<!-- scaling:begin -->``
.. ``<!-- scaling:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "scaling"
SCRIPT = Path(__file__).resolve()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny:bert", "minilm"])
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="micro-batch per worker")
    p.add_argument("--prompt-length", type=int, default=20)
    p.add_argument("--lowrank-rank", type=int, default=16)
    p.add_argument("--max-input-length", type=int, default=96)
    p.add_argument("--zero-stage", type=int, default=1)
    p.add_argument("--collective-repeats", type=int, default=30)
    C.add_output_args(p)
    args = p.parse_args(argv)
    args.argv = list(argv)
    return args


def trial_config(args, model: str) -> dict:
    return {"method": "dept", "model": model, "steps": args.warmup + args.steps, "batch_size": args.batch_size,
            "prompt_length": args.prompt_length, "lowrank_rank": args.lowrank_rank,
            "max_input_length": args.max_input_length, "train_k": "1", "train_per_k": 200, "eval_k": "1",
            "eval_per_k": 10, "device": "cpu", "zero_stage": args.zero_stage}


# ---- one rank (a subprocess) -----------------------------------------------------------------------
def child_main(rank: int, world: int, port: int, cfg: dict, warmup: int, repeats: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from raypost import knobs

    knobs.apply_defaults()
    import torch.distributed as dist

    from raypost.recipes import get_recipe
    from raypost.recipes.train_config import TrainConfig
    from raypost.train.engine import initialize_engine

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    train_cfg = TrainConfig(**{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
    torch.manual_seed(train_cfg.seed)
    setup = get_recipe("dept").setup(cfg, rank, world)
    engine, _ = initialize_engine(setup.model, setup.param_groups, train_cfg, world, torch.device("cpu"))
    rows = []
    for i in range(train_cfg.steps):
        dist.barrier()  # every step starts together: the slowest rank sets the pace anyway
        t0 = time.perf_counter()
        batch = next(setup.train_batches)
        loss = setup.compute_loss(engine, batch)
        t1 = time.perf_counter()
        engine.backward(loss)
        t2 = time.perf_counter()
        engine.step()
        t3 = time.perf_counter()
        value = loss.detach().float().clone()
        if world > 1:
            dist.all_reduce(value)  # the trial loop's logged mean loss
        float(value)
        t4 = time.perf_counter()
        if i >= warmup:
            rows.append({"forward": t1 - t0, "backward": t2 - t1, "step": t3 - t2, "loss_allreduce": t4 - t3,
                         "total": t4 - t0})
    trainable = sum(p.numel() for p in engine.module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in engine.module.parameters())
    collectives = {}
    if world > 1:
        for name, n in (("one float (logged loss)", 1), ("trainable parameters (DePT gradients)", trainable),
                        ("all parameters (full fine-tuning)", total)):
            x = torch.ones(n)
            times = []
            for _ in range(3 + repeats):
                dist.barrier()
                t = time.perf_counter()
                dist.all_reduce(x)
                times.append(time.perf_counter() - t)
            collectives[name] = {"numel": n, "bytes": 4 * n, "samples": times[3:]}
    dist.barrier()
    if rank == 0:
        out.write_text(json.dumps({"steps": rows, "trainable": trainable, "total_params": total,
                                   "collectives": collectives, "optimizer": type(engine.optimizer).__name__}))
    dist.destroy_process_group()


def run_world(cfg: dict, world: int, args) -> dict:
    out = Path(tempfile.mkdtemp(prefix="scaling-")) / "rank0.json"
    port = C.free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--child", str(r), str(world), str(port), json.dumps(cfg),
                               str(args.warmup), str(args.collective_repeats), str(out)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    errs = [p.communicate()[1] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"world {world} failed:\n" + "\n".join(e[-2000:] for e in errs))
    return json.loads(out.read_text())


# ---- analysis (pure) -------------------------------------------------------------------------------
PARTS = ("forward", "backward", "step", "loss_allreduce", "total")


def summarise_model(model: str, runs: dict[int, list[dict]], batch: int) -> dict:
    """Medians per world size over every timed step of every round, and the scaling figures."""
    worlds = {}
    for world, rs in sorted(runs.items()):
        steps = [s for r in rs for s in r["steps"]]
        row = {p: C.median([s[p] for s in steps]) for p in PARTS}
        row["n_steps"] = len(steps)
        row["samples_per_s"] = world * batch / row["total"]
        coll = {}
        for r in rs:
            for name, c in r["collectives"].items():
                coll.setdefault(name, {"numel": c["numel"], "bytes": c["bytes"], "samples": []})
                coll[name]["samples"] += c["samples"]
        row["collectives"] = {k: {"numel": v["numel"], "bytes": v["bytes"], "median_s": C.median(v["samples"])}
                              for k, v in coll.items()}
        worlds[world] = row
    first = runs[min(runs)][0]
    base = worlds[min(worlds)]
    for world, row in worlds.items():
        row["speedup"] = row["samples_per_s"] / base["samples_per_s"]
        row["efficiency"] = row["speedup"] / (world / min(worlds))
    return {"model": model, "trainable": first.get("trainable"), "total_params": first.get("total_params"),
            "optimizer": first.get("optimizer"), "worlds": worlds}


def ring_allreduce_s(numel: int, world: int, alpha_s: float, beta_bytes_per_s: float) -> float:
    """Ring all-reduce of ``numel`` fp32 values over ``world`` ranks: 2(N-1) latency terms and
    2(N-1)/N of the payload through each link."""
    if world <= 1:
        return 0.0
    return 2 * (world - 1) * alpha_s + 2 * (world - 1) / world * 4 * numel / beta_bytes_per_s


def predict_step(t_compute: float, t_opt: float, numel: int, world: int, alpha_s: float, beta: float,
                 t_platform: float = 0.0) -> float:
    """Weak scaling (same micro-batch per worker): compute and optimizer stay, communication grows."""
    return t_compute + t_opt + ring_allreduce_s(numel, world, alpha_s, beta) + ring_allreduce_s(1, world, alpha_s, beta) \
        + t_platform


def fit_alpha_beta(collectives: dict, world: int) -> tuple[float, float] | None:
    """alpha (latency per hop) and beta (bytes/s) from the 1-float and the largest all-reduce."""
    if world < 2 or not collectives:
        return None
    small = min(collectives.values(), key=lambda c: c["numel"])
    large = max(collectives.values(), key=lambda c: c["numel"])
    alpha = small["median_s"] / (2 * (world - 1))
    extra = large["median_s"] - small["median_s"]
    if extra <= 0:
        return alpha, float("inf")
    beta = 2 * (world - 1) / world * large["bytes"] / extra
    return alpha, beta


# ---- report ----------------------------------------------------------------------------------------
def render_markdown(report: dict) -> str:
    meta, mach = report["meta"], report["meta"]["machine"]
    out = [f"Command: `{meta['command']}`  ",
           f"Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), torch {mach.get('torch')}, DeepSpeed "
           f"{mach.get('deepspeed')}, gloo on one host, 1 torch thread per rank; {C.load_text(meta['load'], mach['nproc'])}; "
           f"{meta['date']}, {meta['elapsed_s']:.0f} s.  ",
           f"Settings: DePT (m = {meta['config']['prompt_length']}, r = {meta['config']['lowrank_rank']}, "
           f"s = {meta['config']['max_input_length']}), micro-batch {meta['config']['batch_size']} per worker, ZeRO "
           f"stage {meta['config']['zero_stage']}, {meta['steps']} timed steps after {meta['warmup']} warm-up, "
           f"{meta['rounds']} round(s) alternating the world sizes; medians.", "",
           "| model | trainable / total params | workers | step ms | forward | backward | engine.step | loss all-reduce "
           "| samples/s | speed-up | efficiency |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for m in report["models"]:
        for w, r in m["worlds"].items():
            out.append(f"| {m['model']} | {m['trainable']:,} / {m['total_params']:,} | {w} | {C.fmt(1000 * r['total'])} | "
                       f"{C.fmt(1000 * r['forward'])} | {C.fmt(1000 * r['backward'])} | {C.fmt(1000 * r['step'])} | "
                       f"{C.fmt(1000 * r['loss_allreduce'])} | {C.fmt(r['samples_per_s'])} | {r['speedup']:.2f} | "
                       f"{r['efficiency']:.2f} |")
    coll_rows = [(m["model"], w, k, c) for m in report["models"] for w, r in m["worlds"].items()
                 for k, c in r["collectives"].items()]
    if coll_rows:
        out += ["", "All-reduce on this machine (gloo, fp32, median):", "",
                "| model | workers | payload | values | bytes | ms |", "|---|--:|---|--:|--:|--:|"]
        out += [f"| {m} | {w} | {k} | {c['numel']:,} | {c['bytes']:,} | {C.fmt(1000 * c['median_s'])} |"
                for m, w, k, c in coll_rows]
    pred = report.get("prediction")
    if pred:
        out += ["", "Fitted: α = " + ", ".join(f"{p['model']} {1e3 * p['alpha_s']:.3g} ms" for p in pred)
                + "; β = " + ", ".join(f"{p['model']} {p['beta'] / 1e6:.3g} MB/s" for p in pred)
                + ". Predicted 2-worker step from the 1-worker step + the modelled all-reduces vs measured: "
                + "; ".join(f"{p['model']} {1e3 * p['predicted_s']:.3g} ms vs {1e3 * p['measured_s']:.3g} ms"
                            for p in pred) + "."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":
        rank, world, port, cfg, warmup, repeats, out = argv[1:8]
        child_main(int(rank), int(world), int(port), json.loads(cfg), int(warmup), int(repeats), Path(out))
        return {}
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    load = C.LoadSampler()
    models = []
    for model in args.models:
        cfg = trial_config(args, model)
        runs: dict[int, list[dict]] = {}
        for rnd in range(args.rounds):
            order = args.world_sizes if rnd % 2 == 0 else args.world_sizes[::-1]
            for world in order:
                load.sample()
                res = run_world(cfg, world, args)
                runs.setdefault(world, []).append(res)
                log(f"{model} round {rnd + 1} world {world}: step "
                    f"{1000 * C.median([s['total'] for s in res['steps']]):.1f} ms")
        models.append(summarise_model(model, runs, args.batch_size))
    load.sample()
    prediction = []
    for m in models:
        ws = sorted(m["worlds"])
        if len(ws) < 2:
            continue
        one, two = m["worlds"][ws[0]], m["worlds"][ws[1]]
        fit = fit_alpha_beta(two["collectives"], ws[1])
        if fit is None:
            continue
        alpha, beta = fit
        t_compute = one["forward"] + one["backward"]
        predicted = predict_step(t_compute, one["step"], m["trainable"], ws[1], alpha, beta)
        prediction.append({"model": m["model"], "alpha_s": alpha, "beta": beta, "predicted_s": predicted,
                           "measured_s": two["total"], "world": ws[1]})
    config = trial_config(args, args.models[0])
    report = {"meta": {"benchmark": NAME, "command": C.command_line(f"{NAME}.py", args.argv),
                       "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": C.machine(), "load": load.summary(),
                       "config": config, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
                       "elapsed_s": time.perf_counter() - t0},
              "models": models, "prediction": prediction}
    markdown = render_markdown(report)
    return C.write_outputs(args, NAME, report, markdown)


if __name__ == "__main__":
    main()
