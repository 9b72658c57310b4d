"""The per-worker training loop every method shares (runs inside a Ray Train worker).

recipe.setup -> deepspeed.initialize (optimizer groups + lr schedule) -> [resume from checkpoint]
-> steps; every ``eval_every`` steps: evaluate (every rank, on its shard), report metrics + a checkpoint to Ray
Train (which forwards them to Tune for early stopping), flush buffered metrics to MLflow in one
call, and log the adapter to MLflow when the objective improved. The adapter is logged here, not
after ``fit()``, because Tune may stop a trial at any report and nothing after it would run.

The objective (``_metric``/``_mode``, set by the sweep from its space's ``objectives``) is the
one Tune, ASHA and checkpoint ranking use: "improved", ``best_<metric>`` and the logged adapter
follow it too.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from raypost import knobs
from raypost.batches import count_tokens
from raypost.distributed import broadcast, gather_objects, mean_across_ranks, replica_max_diff, sum_across_ranks
from raypost.recipes import get_recipe
from raypost.recipes.train_config import TrainConfig
from raypost.train.engine import build_worker, group_lrs, resolve_device, save_trainable

PRIVATE_PREFIX = "_"  # config keys the orchestration adds (run ids, URIs, the objective); not hyperparameters
DEFAULT_OBJECTIVE = ("eval_accuracy", "max")
STATE_FILE = "trainer_state.json"
ADAPTER_DIR = "adapter"
DS_DIR = "deepspeed"
CHECKPOINT_TAG = "state"  # not "latest": DeepSpeed writes a file of that name beside the tag folder
NODE_IDS_TAG = "raypost.worker_node_ids"  # Ray node id of each rank of the current worker group


def public_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith(PRIVATE_PREFIX)}


def train_loop_per_worker(cfg: dict) -> None:
    import ray.train

    from raypost.tracking.worker import WorkerLogger

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if knobs.console() != "verbose":
        # Ray Train sets the worker's root logger to INFO and routes print() into it, so every
        # library's INFO lines and prints reach the console ("Reporting training result ...",
        # DeepSpeed's op build); raypost's progress lines replace them (docs/orchestration.md)
        logging.getLogger().setLevel(logging.WARNING)
    _use_assigned_cpus()
    flat = public_config(cfg)
    train_cfg = TrainConfig(**{k: v for k, v in flat.items() if k in TrainConfig.__dataclass_fields__})
    torch.manual_seed(train_cfg.seed)
    device = resolve_device(train_cfg.device)

    metric, mode = cfg.get("_metric", DEFAULT_OBJECTIVE[0]), cfg.get("_mode", DEFAULT_OBJECTIVE[1])
    recipe = get_recipe(train_cfg.method)
    checkpoint = ray.train.get_checkpoint()  # before setup: a resumed trial may skip setup-time work
    setup, engine, optimizer = build_worker(recipe, flat, train_cfg, rank, world, device, resuming=checkpoint is not None)
    logger = WorkerLogger(cfg.get("_run_id"), cfg.get("_tracking_uri"), enabled=rank == 0)
    node_ids = ",".join(_node_ids_of_ranks(world))
    # the param keeps where the trial first ran (params are immutable, so a restart skips it);
    # the tag follows the worker group, e.g. onto the remaining node after a node was lost
    logger.log_params({**recipe.resolved(flat), **setup.params, "world_size": world,
                       "device": device.type, "optimizer": type(optimizer).__name__,
                       "worker_node_ids": node_ids[:6000]})  # MLflow's param limit: ~100 ranks
    logger.set_tag(NODE_IDS_TAG, node_ids[:8000])

    state = _restore(engine, checkpoint)
    step, best = state["step"], state.get("best")
    if step:
        logger.add(step, resumed_from_step=step)
    else:  # metrics of work setup() did before training (e.g. PCP stage 1); once, not on resume
        for pre_step, pre in setup.pre_metrics:
            logger.add(pre_step, **pre)
        logger.flush()
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    window_tokens, window_start = 0, time.perf_counter()
    # time to accuracy: wall and CPU seconds of this run of the loop (all ranks' CPU summed),
    # carried over from the checkpoint on resume so the curve continues
    train_start, cpu_start = time.perf_counter() - state.get("train_s", 0.0), time.process_time()
    cpu_before = state.get("cpu_s", 0.0)
    while step < train_cfg.steps:
        lrs = group_lrs(optimizer)  # the rates this step trains at (the schedule moves them after it)
        for _ in range(train_cfg.grad_accum):
            batch = {k: v.to(device) for k, v in next(setup.train_batches).items()}
            loss = setup.compute_loss(engine, batch)
            engine.backward(loss)
            engine.step()
            window_tokens += count_tokens(batch)
        step += 1
        loss_value = mean_across_ranks(loss.detach().float(), world)
        logger.add(step, train_loss=loss_value, **lrs)
        if step % train_cfg.eval_every and step != train_cfg.steps:
            logger.progress(step, train_cfg.steps)  # a flush and a progress tag every ~30 s
            continue
        elapsed = time.perf_counter() - window_start
        metrics = {"step": step, "train_loss": loss_value,
                   "tokens_per_s": sum_across_ranks(window_tokens, world) / max(elapsed, 1e-9),
                   "train_s": time.perf_counter() - train_start,
                   "cpu_s": cpu_before + mean_across_ranks(torch.tensor(time.process_time() - cpu_start), world) * world,
                   "peak_memory_mb": _peak_memory_mb(device),
                   # replicas must hold identical trainable weights after the gradient all-reduce
                   "replica_max_diff": replica_max_diff(engine.module, world)}
        if "trainable_params" in setup.params:  # a second objective for Pareto sweeps
            metrics["trainable_params"] = setup.params["trainable_params"]
        # every rank evaluates (the evaluator may shard the rows); rank 0's figures are the ones reported
        metrics.update(broadcast(setup.evaluate(engine.module), world))
        value = metrics.get(metric)
        improved = value is not None and (best is None or better(value, best))
        best = value if improved else best
        logger.add(step, **{k: v for k, v in metrics.items() if k != "train_loss"})  # logged per step above
        logger.progress(step, train_cfg.steps, force=True)  # flushes
        if step == train_cfg.steps and rank == 0 and setup.final_evaluate is not None:
            # before the last report, not after: a scheduler may stop the trial at any report,
            # and a trial stopped at its last one would otherwise never get its final evaluation
            with tempfile.TemporaryDirectory() as out:
                logger.log_final(setup.final_evaluate(engine.module, Path(out)), Path(out), step)
        _report(engine, setup, metrics, {"step": step, "best": best, "train_s": metrics["train_s"],
                                         "cpu_s": metrics["cpu_s"]}, rank,
                log_adapter=(lambda d: logger.log_adapter(d, metric, value, step)) if improved else None)
        window_tokens, window_start = 0, time.perf_counter()


def _report(engine, setup, metrics: dict, state: dict, rank: int, log_adapter=None) -> None:
    """Every rank reports (Train V2 requires it) with its shard of the DeepSpeed state."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        # frozen base weights are never checkpointed: only adapter, head and optimizer state
        engine.save_checkpoint(os.path.join(tmp, DS_DIR), tag=CHECKPOINT_TAG, exclude_frozen_parameters=True)
        save_trainable(engine, setup.save_adapter, Path(tmp) / ADAPTER_DIR, rank)  # every rank: ZeRO-3 gathers
        if rank == 0:
            (Path(tmp) / STATE_FILE).write_text(json.dumps({**state, "metrics": metrics}))
            if log_adapter is not None:
                log_adapter(Path(tmp) / ADAPTER_DIR)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    # report() only queues the result; the controller commits it at its next poll. Waiting for
    # that (within RAY_TRAIN_HEALTH_CHECK_INTERVAL_S) means a worker lost right after an evaluation
    # restarts from this checkpoint, not from the one before it.
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)


def _restore(engine, checkpoint) -> dict:
    """Resume after a worker restart or a resumed sweep; returns the saved trainer state."""
    if checkpoint is None:
        return {"step": 0}
    with checkpoint.as_directory() as path:
        engine.load_checkpoint(os.path.join(path, DS_DIR), tag=CHECKPOINT_TAG, load_module_strict=False)
        return json.loads((Path(path) / STATE_FILE).read_text())


def _use_assigned_cpus() -> None:
    """As many torch threads as CPUs Ray gave this worker (``--cpus-per-worker``): a worker given
    2 CPUs computes with 2 threads, one given 1 does not oversubscribe a core another rank uses."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def _node_ids_of_ranks(world: int) -> list[str]:
    """The Ray node id of every rank, in rank order (one collective per worker-group start)."""
    import ray

    return gather_objects(ray.get_runtime_context().get_node_id(), world)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
