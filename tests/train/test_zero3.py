"""DeepSpeed ZeRO-3 for every recipe, on two CPU ranks over gloo (no Ray): each recipe's trial
at stage 3 gives the loss curve, the evaluation and the saved adapter of the same trial at
stage 0, and a stage-3 checkpoint resumes the curve.

The two ranks are spawned processes that build what the trial loop builds (``recipe.setup``,
``initialize_engine``, ``save_trainable``, the checkpoint calls of the loop) and write what they
saw to a JSON file; the assertions run here. ``zero3_persistence_threshold: 0`` makes DeepSpeed
partition even the tiny models' weights (by default it keeps those under 1e5 elements whole).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
STEPS, MORE = 3, 2  # steps before the checkpoint, and after it (continued vs resumed)
COMMON = {"batch_size": 2, "seed": 0, "device": "cpu", "lr_schedule": "linear", "warmup_steps": 1,
          "steps": STEPS + MORE, "zero3_persistence_threshold": 0,
          "train_k": "1", "eval_k": "1", "eval_per_k": 5}  # 5 eval rows over 2 ranks: uneven shards
CASES = {
    "dept-causal": {"method": "dept", "model": "tiny:gpt2", "prompt_length": 3, "lowrank_rank": 2,
                    "max_input_length": 224, "train_per_k": 8, "lr_prompt": 0.3, "lr_lowrank": 0.05},
    "dept-classifier": {"method": "dept", "model": "tiny:bert", "prompt_length": 3, "lowrank_rank": 2,
                        "max_input_length": 224, "train_per_k": 8, "lr_prompt": 0.3, "lr_lowrank": 0.05,
                        "lr_head": 0.05},
    "im-full": {"method": "im", "model": "tiny:gpt2", "trainable": "full", "lr": 1e-2, "max_seq_length": 448,
                "train_per_k": 8, "instruction_weight": 0.5, "im_eval_max_rows": 4},
    "im-lora": {"method": "im", "model": "tiny:gpt2", "trainable": "lora", "lora_rank": 4, "lr": 1e-2,
                "max_seq_length": 448, "train_per_k": 8, "instruction_weight": 0.5, "im_eval_max_rows": 4},
    "im-dept": {"method": "im", "model": "tiny:gpt2", "trainable": "dept", "prompt_length": 3, "lowrank_rank": 2,
                "max_seq_length": 448, "max_input_length": 448, "train_per_k": 8, "instruction_weight": 0.5,
                "im_eval_max_rows": 4},
    "pcp": {"method": "pcp", "model": "tiny:bert", "train_k": "2", "train_per_k": 30, "labelled_per_label": 1,
            "unlabelled_size": 8, "cpt_steps": 2, "cpt_lr": 3e-3, "ft_lr": 3e-3, "max_prompt_length": 256},
    "finetune": {"method": "finetune", "model": "tiny:bert", "max_input_length": 224, "train_per_k": 8,
                 "ft_lr": 3e-3},
}
# the same tiny models saved as checkpoints: at stage 3 these are partitioned as they load
# (transformers' HfDeepSpeedConfig + zero.Init), before DeepSpeed starts
PRETRAINED = {
    "dept-causal-loaded": {**CASES["dept-causal"], "model": "{gpt2}"},
    "im-lora-loaded": {**CASES["im-lora"], "model": "{gpt2}"},
    "finetune-loaded": {**CASES["finetune"], "model": "{bert}"},
}
CASES.update(PRETRAINED)


def _save_checkpoints(out: Path) -> dict[str, str]:
    from raypost.models import load_base

    paths = {}
    for name, kind, labels in (("gpt2", "causal", None), ("bert", "classifier", 9)):
        base = load_base(f"tiny:{name}", kind, num_labels=labels)
        paths[name] = str(out / name)
        base.model.save_pretrained(paths[name])
        base.tokenizer.save_pretrained(paths[name])
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(directory: Path) -> dict:
    """Content of every saved file: for safetensors, each tensor's shape, sum and sum of squares
    (two stages reduce gradients in a different order, so values agree to float noise, not bits);
    for every other file, its bytes' hash."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix == ".safetensors":
            out[path.name] = {k: [list(v.shape), float(v.double().sum()), float(v.double().square().sum())]
                              for k, v in sorted(load_file(path).items())}
        elif path.is_file():
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _trial(flat: dict, stage: int, rank: int, out: Path) -> dict:
    """What the loop does at one ZeRO stage: train, evaluate, save, checkpoint, then either go
    on (``continued``) or start a fresh engine from the checkpoint (``resumed``)."""
    from raypost.distributed import is_partitioned, mean_across_ranks
    from raypost.recipes import get_recipe
    from raypost.recipes.train_config import TrainConfig
    from raypost.train.engine import initialize_engine, partitioned_loading, save_trainable

    flat = {**flat, "zero_stage": stage}
    cfg = TrainConfig(**{k: v for k, v in flat.items() if k in TrainConfig.__dataclass_fields__})
    cpu = torch.device("cpu")

    recipe = get_recipe(cfg.method)

    def build():
        torch.manual_seed(cfg.seed)
        with partitioned_loading(cfg, WORLD, cpu, enabled=recipe.loads_partitioned):  # as build_worker does,
            setup = recipe.setup(flat, rank, WORLD, device=cpu)  # to see the model before DeepSpeed starts
        loaded_partitioned = is_partitioned(setup.model)
        engine, _ = initialize_engine(setup.model, setup.param_groups, cfg, WORLD, cpu)
        engine.loaded_partitioned = loaded_partitioned
        return setup, engine

    def steps(setup, engine, n):
        losses = []
        for _ in range(n):
            loss = setup.compute_loss(engine, next(setup.train_batches))
            engine.backward(loss)
            engine.step()
            losses.append(mean_across_ranks(loss.detach().float(), WORLD))
        return losses

    setup, engine = build()
    engine.eval()  # no dropout: the curves of the two stages are compared number by number
    seen = {"partitioned": is_partitioned(engine.module), "loaded_partitioned": engine.loaded_partitioned,
            "losses": steps(setup, engine, STEPS)}
    adapter = out / f"{stage}-adapter"  # saved straight after a step, when every weight is partitioned
    save_trainable(engine, setup.save_adapter, adapter, rank)
    seen["metrics"] = setup.evaluate(engine.module)
    if rank == 0 and setup.final_evaluate is not None:  # rank 0 alone: reuses what every rank evaluated
        seen["final"] = setup.final_evaluate(engine.module, out / f"{stage}-final")
    engine.save_checkpoint(str(out / f"{stage}-ds"), tag="state", exclude_frozen_parameters=True)
    seen["continued"] = steps(setup, engine, MORE)

    setup, engine = build()
    engine.eval()
    engine.load_checkpoint(str(out / f"{stage}-ds"), tag="state", load_module_strict=False)
    for _ in range(STEPS):  # the batches the first engine trained on
        next(setup.train_batches)
    seen["resumed"] = steps(setup, engine, MORE)
    if rank == 0:
        seen["adapter"] = _files(adapter)
    return seen


def _rank(rank: int, port: int, out: str, names: list[str], models: dict[str, str]) -> None:
    import multiprocessing

    import torch.distributed as dist

    # each rank is a trial worker's main process, as under Ray: transformers' MLM collator (PCP)
    # seeds itself only there, and refuses in what it takes for a DataLoader worker
    multiprocessing.current_process().name = "MainProcess"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD), DS_ACCELERATOR="cpu",
                      TRANSFORMERS_VERBOSITY="error")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    results = {}
    for name in names:
        flat = {k: v.format(**models) if isinstance(v, str) else v for k, v in CASES[name].items()}
        results[name] = {stage: _trial({**COMMON, **flat}, stage, rank, Path(out) / name) for stage in (0, 3)}
    if rank == 0:
        (Path(out) / "results.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def zero3(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3")
    mp.spawn(_rank, args=(_free_port(), str(out), list(CASES), _save_checkpoints(out)), nprocs=WORLD, join=True)
    return {name: {int(k): v for k, v in stages.items()}
            for name, stages in json.loads((out / "results.json").read_text()).items()}


@pytest.mark.parametrize("name", list(CASES))
def test_zero3_trial_equals_stage0(zero3, name):
    stage0, stage3 = zero3[name][0], zero3[name][3]
    assert stage3["partitioned"] and not stage0["partitioned"]
    # a checkpoint loads partitioned at stage 3 (PCP's stage 1 needs its MLM whole, config-built models load whole)
    assert stage3["loaded_partitioned"] == (name in PRETRAINED) and not stage0["loaded_partitioned"]
    # the same loss curve: ZeRO-3 changes where the weights live, not the arithmetic
    assert stage3["losses"] == pytest.approx(stage0["losses"], rel=1e-4)
    assert len(set(stage0["losses"])) == STEPS  # weights moved between steps: the curve is a curve
    # every rank evaluated its shard in lockstep (5 rows over 2 ranks: one repeats a row)
    assert stage3["metrics"]["eval_accuracy"] == stage0["metrics"]["eval_accuracy"]
    for key in set(stage0["metrics"]) - {"eval_accuracy", "eval_loss"}:  # eval_loss counts the repeated row
        assert stage3["metrics"][key] == pytest.approx(stage0["metrics"][key], rel=1e-4), key
    if "final" in stage0:  # rank 0's final evaluation reuses the gathered predictions
        assert stage3["final"]["stepgame_acc"] == stage0["final"]["stepgame_acc"]
    # the saved adapter is gathered whole: the same files, the same tensors up to float noise
    files0, files3 = stage0["adapter"], stage3["adapter"]
    assert sorted(files3) == sorted(files0) and any(name.endswith(".safetensors") for name in files0)
    for name, content in files0.items():
        if isinstance(content, dict):
            assert sorted(files3[name]) == sorted(content), name
            for tensor, (shape, total, squares) in content.items():
                assert files3[name][tensor][0] == shape and shape and shape != [0], tensor
                assert files3[name][tensor][1:] == pytest.approx([total, squares], rel=1e-4, abs=1e-6), tensor
        else:
            assert files3[name] == content, name


@pytest.mark.parametrize("name", list(CASES))
def test_zero3_checkpoint_resumes_the_curve(zero3, name):
    for stage in (0, 3):
        seen = zero3[name][stage]
        assert seen["resumed"] == pytest.approx(seen["continued"], rel=1e-4), stage
    assert zero3[name][3]["continued"] == pytest.approx(zero3[name][0]["continued"], rel=1e-4)
