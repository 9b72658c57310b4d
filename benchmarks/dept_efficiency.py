"""DePT vs vanilla prompt tuning at the same trainable-parameter budget: time, memory, throughput.

The DePT paper (Shi & Lipani, ICLR 2024) claims more than 20% less time and memory than
prompt tuning (PT) with m = 100 tokens, because DePT prepends a shorter prompt and
spends the rest of the budget on a low-rank offset A (s x r) @ B (r x d) of the input embeddings
(docs/dept.md). This script measures that claim.

Per model it builds one frozen base and, on top of it, one ``DeptModel`` per split of the budget
``m0 * d`` (m0 = the first ``--prompt-lengths`` entry, r = 0: vanilla PT); the other prompt
lengths get ``r = rank_for_budget(m0 * d, m, s, d)``, i.e. the same budget. Inputs are random
token ids, every row s tokens long (the paper pads inputs to s), so the m prompt positions are
added on top of s: that is where DePT saves. Measured, interleaved in one process (the order of
the splits rotates every round, so drift on a shared machine hits all splits alike), medians
over ``--repeats`` rounds:

- training step: zero_grad + forward + backward + AdamW step (train mode), wall-clock seconds;
- tokens/s: batch_size * s input tokens (prompt slots not counted) / median step time;
- inference latency: one forward (eval mode, no grad) on the same batch, wall-clock seconds;
- peak memory of a training step, in MB of tensor memory above what is allocated before the step
  (activations, gradients, optimizer temporaries), and "total" = that + the resident tensors
  (base weights, adapter, head, AdamW state). On CUDA: ``torch.cuda.max_memory_allocated``. On
  CPU: torch's profiler with ``profile_memory=True``, whose allocation events carry the running
  total of tensor bytes allocated by torch's CPU allocator since profiling began, i.e. the CPU
  counterpart of ``max_memory_allocated`` (RSS is not used: glibc keeps freed memory, so it
  depends on what ran before; tracemalloc does not see torch's allocations).

Ratios are DePT / PT of the medians (below 1 = DePT is cheaper; for tokens/s above 1 is better).

    .venv/bin/python benchmarks/dept_efficiency.py --threads 1      # CPU default size (minutes on 2 cores)
    .venv/bin/python benchmarks/dept_efficiency.py --device cuda --models t5-base=seq2seq \\
        openai-community/gpt2 minilm --batch-size 32 --repeats 20    # real sizes on a GPU
    .venv/bin/python benchmarks/dept_efficiency.py --smoke --out-dir /tmp/b --readme /tmp/b/R.md

``--models`` takes ``t5``, ``gpt2``, ``llama`` (built from a config at ``--d-model`` and
``--layers``, real vocabularies, random weights), ``minilm`` (the pretrained encoder, as a
classifier), ``smollm2`` (the pretrained SmolLM2-135M-Instruct decoder), ``tiny:<arch>``, or any
Hugging Face id / local path (loaded with ``raypost.models.load_base``), optionally as
``NAME=KIND`` (classifier, causal, seq2seq). The built names win: ``gpt2`` is the config-built
model, ``openai-community/gpt2`` the hub one.

Writes ``dept_efficiency.json`` (every sample) and ``dept_efficiency.md`` to ``--out-dir`` and
rewrites the block between ``<!-- dept_efficiency:begin -->`` and ``<!-- dept_efficiency:end -->``
in ``--readme`` (appended if the markers are missing), so the README table is always the data's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from raypost.errors import ConfigError
from raypost.methods.dept import DeptConfig, DeptModel, rank_for_budget

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

BEGIN, END = C.markers("dept_efficiency")
BUILT = {"t5": "seq2seq", "gpt2": "causal", "llama": "causal"}  # config-built at --d-model/--layers
# the causal row is the real SmolLM2-135M-Instruct (pretrained weights, real vocabulary, d = 576)
DEFAULT_MODELS = ("t5", "smollm2", "minilm")
KINDS = ("classifier", "causal", "seq2seq")
NUM_LABELS = 2  # classifier head size
CLAIM = 0.20  # the paper: DePT saves more than 20% time and memory over PT with m = 100
MB = 2**20
SMOKE = dict(d_model=64, layers=1, seq_len=16, batch_size=1, target_len=4, prompt_lengths="10,6,4",
             repeats=3, warmup=1, memory_repeats=1, threads=1)

# the quantities compared, as (JSON key, ratio key); the ratio is always DePT median / PT median
METRICS = (("train_step_s", "train_step_time"), ("tokens_per_s", "tokens_per_s"),
           ("step_peak_mb", "step_peak_memory"), ("total_peak_mb", "total_peak_memory"),
           ("infer_s", "infer_latency"))


# ---- command line -------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="t5, gpt2, llama (config-built at --d-model/--layers), minilm, smollm2, tiny:<arch>, or "
                        "HF id/path[=kind] (space- or comma-separated; the hub's GPT-2 is "
                        "openai-community/gpt2). Default: %(default)s")
    p.add_argument("--d-model", type=int, default=384, help="width d of the config-built models")
    p.add_argument("--layers", type=int, default=4, help="layers of the config-built models (T5: each stack)")
    p.add_argument("--seq-len", type=int, default=256, help="s: input length (DePT's max_input_length)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--target-len", type=int, default=16, help="decoder labels per row (seq2seq only)")
    p.add_argument("--prompt-lengths", default="100,60,40",
                   help="m per split; the first is vanilla PT (r = 0) and sets the budget m0 * d")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (each times every split once)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per split first")
    p.add_argument("--memory-repeats", type=int, default=1,
                   help="peak-memory measurements per split (tensor counts: deterministic on CPU)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    p.add_argument("--readme", type=Path, default=HERE / "README.md", help="README whose block is rewritten")
    p.add_argument("--no-readme", action="store_true", help="do not touch any README")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny sizes for tests, seconds not minutes ({', '.join(f'{k}={v}' for k, v in SMOKE.items())})")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in args.argv if a.startswith("--")}
        for key, value in SMOKE.items():
            if key not in given:  # explicit flags win over the smoke sizes
                setattr(args, key, value)
    args.models = [m for item in args.models for m in item.split(",") if m]
    try:
        args.prompt_lengths = [int(m) for m in args.prompt_lengths.split(",")]
    except ValueError:
        raise ConfigError(f"--prompt-lengths={args.prompt_lengths!r} is not a comma-separated list of ints") from None
    for name in ("d_model", "layers", "seq_len", "batch_size", "target_len", "repeats", "memory_repeats"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} is below its minimum 1")
    if len(args.prompt_lengths) < 2 or args.prompt_lengths[0] < 1 or min(args.prompt_lengths) < 0:
        raise ConfigError(f"--prompt-lengths={args.prompt_lengths} needs a PT length >= 1 then DePT lengths >= 0")
    if args.memory_repeats > args.repeats:
        raise ConfigError(f"--memory-repeats={args.memory_repeats} is above --repeats={args.repeats}")
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device={name} but CUDA is not available")
    return device


# ---- models and inputs --------------------------------------------------------------------
def model_spec(item: str) -> tuple[str, str]:
    """``NAME`` or ``NAME=KIND`` -> (name, kind)."""
    name, _, kind = item.partition("=")
    if not kind:
        if name in BUILT:
            kind = BUILT[name]
        elif name == "minilm":
            kind = "classifier"
        else:
            from raypost.models.dims import default_kind
            kind = default_kind(name)
    if kind not in KINDS:
        raise ConfigError(f"model {item!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    return name, kind


def built_model(arch: str, args, max_positions: int):
    """A randomly initialised model of a real architecture and vocabulary at --d-model/--layers."""
    import transformers as tf

    d, layers = args.d_model, args.layers
    heads = max(1, d // 64)  # 64-wide heads, as T5/GPT-2/Llama
    if d % heads:
        raise ConfigError(f"--d-model={d} is not a multiple of its {heads} heads of width 64")
    if arch == "t5":  # T5 v1 shapes: d_ff = 4d, d_kv = 64, vocab 32128
        config = tf.T5Config(vocab_size=32128, d_model=d, d_ff=4 * d, d_kv=d // heads, num_heads=heads,
                             num_layers=layers, num_decoder_layers=layers, pad_token_id=0, eos_token_id=1,
                             decoder_start_token_id=0)
        return tf.T5ForConditionalGeneration(config), "T5ForConditionalGeneration"
    if arch == "gpt2":
        config = tf.GPT2Config(vocab_size=50257, n_embd=d, n_layer=layers, n_head=heads,
                               n_positions=max(1024, max_positions))
        return tf.GPT2LMHeadModel(config), "GPT2LMHeadModel"
    config = tf.LlamaConfig(vocab_size=32000, hidden_size=d, intermediate_size=max(64, round(8 * d / 3 / 64) * 64),
                            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                            max_position_embeddings=max(2048, max_positions))
    return tf.LlamaForCausalLM(config), "LlamaForCausalLM"


def load_model(name: str, kind: str, args, device, dtype):
    from raypost.models import BaseModel, load_base, tiny_tokenizer

    torch.manual_seed(args.seed)
    longest = args.seq_len + max(args.prompt_lengths)
    if name in BUILT:
        if kind != BUILT[name]:
            raise ConfigError(f"model {name!r} is built as {BUILT[name]}, not {kind}")
        model, cls = built_model(name, args, longest)
        # the tokenizer only seeds the prompt init (vocab sampling); inputs are random ids anyway
        base = BaseModel(model=model, tokenizer=tiny_tokenizer(), kind=kind, name=name)
        source = f"config-built {cls} (random weights), d={args.d_model}, {args.layers} layers"
    else:
        base = load_base(name, kind, num_labels=NUM_LABELS if kind == "classifier" else None, seed=args.seed)
        source = {"minilm": "pretrained MiniLM-L6 (all-MiniLM-L6-v2)",
                  "smollm2": "pretrained SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers)",
                  }.get(name, f"load_base({name!r})")
        cfg = base.model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if limit and longest > limit and kind != "seq2seq":
            raise ConfigError(f"model {name!r} takes {limit} positions, but m + s = {longest}; lower --seq-len")
    base.model.to(device=device, dtype=dtype)
    return base, source


def make_batch(base, kind: str, args, device) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    vocab = base.model.get_input_embeddings().num_embeddings
    ids = torch.randint(vocab, (args.batch_size, args.seq_len), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "seq2seq":
        batch["labels"] = torch.randint(vocab, (args.batch_size, args.target_len), generator=gen)
    elif kind == "causal":
        batch["labels"] = ids.clone()  # LM loss on every input token; DeptModel masks the prompt slots
    else:
        batch["labels"] = torch.randint(NUM_LABELS, (args.batch_size,), generator=gen)
    return {k: v.to(device) for k, v in batch.items()}


# ---- measurements -------------------------------------------------------------------------
def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, optimizer, batch) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    optimizer.step()


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if torch.is_tensor(t) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def resident_bytes(model, optimizer) -> int:
    """Tensors alive between steps: weights, buffers, adapter, head, AdamW state."""
    state = [v for s in optimizer.state.values() for v in s.values()]
    return tensor_bytes([*model.parameters(), *model.buffers(), *state])


def step_peak_bytes(fn, device) -> int:
    """Peak tensor bytes allocated during ``fn()`` above what was allocated before it."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.total_allocated))
    if not events:
        raise RuntimeError("the profiler recorded no CPU allocations; cannot measure peak memory")
    events.sort()
    # the running total counts blocks allocated while profiling since the first session, so the
    # baseline is the total just before this session's first event
    baseline = events[0][2] - events[0][1]
    return max(total for _, _, total in events) - baseline


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def quartiles(samples: list[float]) -> list[float]:
    """[q1, median, q3] (all three equal for one sample)."""
    if len(samples) < 2:
        return [samples[0]] * 3
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return [q1, q2, q3]


def bench_model(item: str, args, device, dtype, log) -> dict:
    name, kind = model_spec(item)
    t0 = time.perf_counter()
    base, source = load_model(name, kind, args, device, dtype)
    d, s = base.hidden_size, args.seq_len
    base_params = sum(p.numel() for p in base.model.parameters())
    budget = args.prompt_lengths[0] * d
    batch = make_batch(base, kind, args, device)
    splits = []
    for m in args.prompt_lengths:
        rank_for_budget(budget, m, s, d)  # a clear error if the budget cannot hold this m
        # the base is shared: every split sees the same frozen weights (a classifier's head is
        # trained by each split's optimizer in turn, which changes its values, not its cost)
        model = DeptModel(base, DeptConfig(prompt_length=m, param_budget=budget, max_input_length=s))
        optimizer = torch.optim.AdamW(model.param_groups())
        splits.append({"m": m, "model": model, "opt": optimizer, "train": [], "train_cpu": [],
                       "infer": [], "mem": []})
    n = len(splits)
    log(f"{name} ({kind}, d={d}, s={s}, budget {budget}): splits "
        + ", ".join(f"m={x['m']}/r={x['model'].rank}" for x in splits))

    def train(x):
        x["model"].train()
        return lambda: train_step(x["model"], x["opt"], batch)

    def infer(x):
        x["model"].eval()

        def run():
            with torch.no_grad():
                x["model"](**batch)
        return run

    for x in splits:  # warm-up: allocator, kernels, AdamW state
        for _ in range(args.warmup):
            train(x)()
        infer(x)()
    for rnd in range(args.repeats):
        order = splits[rnd % n:] + splits[:rnd % n]  # rotate, so no split always runs first
        for x in order:
            wall, cpu = timed(train(x), device)
            x["train"].append(wall)
            x["train_cpu"].append(cpu)
        for x in order:
            x["infer"].append(timed(infer(x), device)[0])
        if rnd < args.memory_repeats:
            for x in order:
                fn = train(x)
                x["opt"].zero_grad(set_to_none=True)  # old grads are freed before, not during, the step
                x["mem"].append(step_peak_bytes(fn, device) / MB)
        log(f"  round {rnd + 1}/{args.repeats}: step s " + "  ".join(
            f"m={x['m']}:{x['train'][-1]:.3f}" for x in splits))

    rows = []
    for x in splits:
        model = x["model"]
        step = median(x["train"])
        resident = resident_bytes(model, x["opt"]) / MB
        rows.append({
            "m": x["m"], "r": model.rank, "trainable_params": model.trainable_parameter_count(),
            "head_params": model.head_parameter_count(), "baseline": x is splits[0],
            "train_step_s": {"median": step, "samples": x["train"]},
            "train_step_cpu_s": {"median": median(x["train_cpu"]), "samples": x["train_cpu"]},
            "tokens_per_s": args.batch_size * s / step,
            "infer_s": {"median": median(x["infer"]), "samples": x["infer"]},
            "step_peak_mb": {"median": median(x["mem"]), "samples": x["mem"]},
            "resident_mb": resident,
            "total_peak_mb": resident + median(x["mem"]),
        })
    pt = rows[0]
    for row in rows:
        row["ratio_vs_pt"] = {ratio: value(row, key) / value(pt, key) for key, ratio in METRICS}
        row["ratio_vs_pt"]["train_step_cpu_time"] = (row["train_step_cpu_s"]["median"]
                                                     / pt["train_step_cpu_s"]["median"])
        # noise gauge: DePT / PT within each round (same moment on the machine), quartiles
        paired = [a / b for a, b in zip(row["train_step_s"]["samples"], pt["train_step_s"]["samples"])]
        row["paired_train_ratio_quartiles"] = quartiles(paired)
    for x in splits:
        x.clear()
    del base, splits  # (batch is held by the timing closures until return)
    gc.collect()
    return {"model": name, "kind": kind, "source": source, "d": d, "s": s, "budget": budget,
            "batch_size": args.batch_size, "target_len": args.target_len if kind == "seq2seq" else None,
            "base_params": base_params, "elapsed_s": time.perf_counter() - t0, "splits": rows}


def value(row: dict, key: str) -> float:
    """The median of a metric (a plain number for derived metrics)."""
    v = row[key]
    return v["median"] if isinstance(v, dict) else v


# ---- report -------------------------------------------------------------------------------
def machine() -> dict:
    info = {**C.machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def render_markdown(report: dict) -> str:
    meta, out = report["meta"], []
    mach, st = meta["machine"], meta["settings"]
    load = lambda key: f"{mach[key][0]:.1f}" if key in mach else "?"  # noqa: E731  (1-minute average)
    dev = meta["device"] + (f" ({meta['device_name']})" if meta.get("device_name") else "")
    out.append(f"Command: `{meta['command']}`  ")
    out.append(f"Machine: {mach['nproc']} CPUs ({mach['cpu_model']}), device {dev}, torch {mach['torch']}, "
               f"transformers {mach['transformers']}, Python {mach['python']}, {mach['torch_threads']} torch "
               f"thread(s); load average {load('loadavg_start')} at start, {load('loadavg_end')} at end "
               f"(shared machine); {meta['date']}, {meta['elapsed_s']:.0f} s.  ")
    out.append(f"Settings: s = {st['seq_len']}, batch {st['batch_size']}, dtype {st['dtype']}, "
               f"medians of {st['repeats']} interleaved rounds after {st['warmup']} warm-up step(s) per split; "
               f"peak memory from {meta['memory_method']}, {st['memory_repeats']} measurement(s) per split.  ")
    out.append("Models: " + "; ".join(f"{r['model']} = {r['source']}, {r['base_params'] / 1e6:.1f}M parameters"
                                      for r in report["results"]) + ".")
    out.append("")
    out.append("| model | m / r | trainable | train step ms | ×PT | CPU time ×PT | tokens/s | ×PT | step peak MB "
               "| ×PT | total peak MB | ×PT | inference ms | ×PT |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for res in report["results"]:
        for row in res["splits"]:
            rt = row["ratio_vs_pt"]
            label = f"{res['model']} ({res['kind']}, d={res['d']})"
            out.append(" | ".join([
                f"| {label}", f"{row['m']} / {row['r']}" + (" (PT)" if row["baseline"] else ""),
                f"{row['trainable_params']:,}",
                fmt(1000 * value(row, "train_step_s")), f"{rt['train_step_time']:.3f}",
                f"{rt['train_step_cpu_time']:.3f}",
                fmt(value(row, "tokens_per_s")), f"{rt['tokens_per_s']:.3f}",
                fmt(value(row, "step_peak_mb")), f"{rt['step_peak_memory']:.3f}",
                fmt(value(row, "total_peak_mb")), f"{rt['total_peak_memory']:.3f}",
                fmt(1000 * value(row, "infer_s")), f"{rt['infer_latency']:.3f}"]) + " |")
    out.append("")
    out.append(f"Claim check — the paper: DePT needs more than {CLAIM:.0%} less training time and memory than "
               "PT. Changes are DePT vs PT (ratio − 1; negative = DePT cheaper); \"positions\" is the change in "
               "sequence length the model sees (m + s); in brackets the quartiles of the per-round DePT/PT "
               "step-time changes, a gauge of the noise.")
    out.append("")
    for res in report["results"]:
        m0 = res["splits"][0]["m"]
        for row in res["splits"][1:]:
            rt, (q1, _, q3) = row["ratio_vs_pt"], row["paired_train_ratio_quartiles"]
            change = {k: v - 1 for k, v in rt.items()}
            holds = "holds" if max(change["train_step_time"], change["step_peak_memory"]) < -CLAIM else "does not hold"
            positions = (row["m"] + res["s"]) / (m0 + res["s"]) - 1
            out.append(f"- {res['model']} m={row['m']}/r={row['r']} (positions {positions:+.1%}): training step "
                       f"{change['train_step_time']:+.1%} [{q1 - 1:+.0%} .. {q3 - 1:+.0%}] (CPU time "
                       f"{change['train_step_cpu_time']:+.1%}), step memory {change['step_peak_memory']:+.1%}, "
                       f"total memory {change['total_peak_memory']:+.1%}, inference {change['infer_latency']:+.1%}"
                       f" → more than {CLAIM:.0%} less time and step memory: **{holds}**")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)  # restored on return: main() may run inside a test process
    try:
        return _run(args, device, dtype)
    finally:
        torch.set_num_threads(threads_before)


def _run(args, device, dtype) -> dict:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    meta = {
        "benchmark": "dept_efficiency",
        "command": C.command_line("dept_efficiency.py", args.argv),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "machine": machine(),
        "memory_method": ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                          "torch.profiler (profile_memory=True): peak of the CPU allocator's running total"),
        "settings": {k: getattr(args, k) for k in ("models", "d_model", "layers", "seq_len", "batch_size",
                                                   "target_len", "prompt_lengths", "repeats", "warmup",
                                                   "memory_repeats", "dtype", "seed", "smoke")},
    }
    results = [bench_model(item, args, device, dtype, log) for item in args.models]
    if hasattr(os, "getloadavg"):
        meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["elapsed_s"] = time.perf_counter() - t0
    report = {"meta": meta, "results": results}
    markdown = render_markdown(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "dept_efficiency.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out_dir / "dept_efficiency.md").write_text(markdown)
    if not args.no_readme:
        C.update_readme(args.readme, "dept_efficiency", markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        print(f"dept_efficiency: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
