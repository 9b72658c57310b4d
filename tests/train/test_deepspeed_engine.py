"""The DeepSpeed engine every trial worker builds (initialize_engine), in-process on a one-rank
gloo group: ZeRO stage and optimizer from the config, one learning rate per parameter group, and
the learning-rate schedule (warm-up, decay, exact resume from a checkpoint)."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist

from raypost.recipes.train_config import TrainConfig
from raypost.train.engine import group_lrs, initialize_engine


@pytest.fixture(scope="module")
def one_rank_group():
    """One gloo group for the module: DeepSpeed caches its groups, so a re-created group breaks it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
               LOCAL_WORLD_SIZE="1")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dist.init_process_group("gloo", init_method="env://", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_engine_is_zero1_with_a_learning_rate_per_group(one_rank_group):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    groups = [{"params": [model.weight], "lr": 0.1, "name": "w"}, {"params": [model.bias], "lr": 0.01, "name": "b"}]
    cfg = TrainConfig(batch_size=2, zero_stage=1, device="cpu", lr_schedule="constant", warmup_ratio=0.0)
    engine, optimizer = initialize_engine(model, groups, cfg, 1, torch.device("cpu"))

    assert type(optimizer).__name__ == "DeepSpeedZeroOptimizer" and engine.zero_optimization_stage() == 1
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]  # each group keeps its own lr
    before = model.weight.detach().clone()
    loss = engine(torch.ones(2, 4)).pow(2).mean()
    engine.backward(loss)
    engine.step()
    assert not torch.equal(before, engine.module.weight.detach())  # a real step was taken


def two_groups(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    return model, [{"params": [model.weight], "lr": 0.1, "name": "w"}, {"params": [model.bias], "lr": 0.01, "name": "b"}]


def run_steps(engine, optimizer, n: int) -> list[dict]:
    """The lr of every group at each of ``n`` steps (read before the step, as the loop logs it)."""
    seen = []
    for _ in range(n):
        seen.append(group_lrs(optimizer))
        engine.backward(engine(torch.ones(2, 4)).pow(2).mean())
        engine.step()
    return seen


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedule_warms_up_then_decays_each_group_from_its_own_peak(one_rank_group, schedule):
    model, groups = two_groups()
    cfg = TrainConfig(batch_size=2, zero_stage=1, device="cpu", steps=10, lr_schedule=schedule, warmup_steps=4)
    engine, optimizer = initialize_engine(model, groups, cfg, 1, torch.device("cpu"))
    seen = run_steps(engine, optimizer, 10)

    def factor(step: int) -> float:  # what transformers' schedules are documented to do
        if step < 4:
            return step / 4
        progress = (step - 4) / (10 - 4)
        return {"linear": 1 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress)), "constant": 1.0}[schedule]

    for step, lrs in enumerate(seen):
        assert lrs["lr_w"] == pytest.approx(0.1 * factor(step), abs=1e-12), (step, lrs)
        assert lrs["lr_b"] == pytest.approx(0.01 * factor(step), abs=1e-12), (step, lrs)
    assert seen[0] == {"lr_w": 0.0, "lr_b": 0.0} and seen[4]["lr_w"] == pytest.approx(0.1)


def test_schedule_resumes_exactly_from_a_checkpoint_taken_mid_warm_up(one_rank_group, tmp_path):
    cfg = TrainConfig(batch_size=2, zero_stage=1, device="cpu", steps=12, lr_schedule="cosine", warmup_steps=6)
    straight = run_steps(*initialize_engine(*two_groups(), cfg, 1, torch.device("cpu")), 12)

    engine, optimizer = initialize_engine(*two_groups(), cfg, 1, torch.device("cpu"))
    first = run_steps(engine, optimizer, 3)  # stop inside the warm-up
    engine.save_checkpoint(str(tmp_path), tag="state")
    engine, optimizer = initialize_engine(*two_groups(seed=1), cfg, 1, torch.device("cpu"))  # a fresh worker
    engine.load_checkpoint(str(tmp_path), tag="state")
    resumed = first + run_steps(engine, optimizer, 9)

    assert [r["lr_w"] for r in resumed] == pytest.approx([s["lr_w"] for s in straight], abs=1e-12)
    assert [r["lr_b"] for r in resumed] == pytest.approx([s["lr_b"] for s in straight], abs=1e-12)
    assert resumed[3]["lr_w"] == pytest.approx(0.05)  # step 3 of a 6-step warm-up: half the peak


def test_dept_trains_in_bf16_on_cpu(one_rank_group):
    """precision: bf16 on a CPU: DeepSpeed holds the model in bf16 (fp32 master weights in the
    optimizer), the DePT recipe's loss starts where fp32's does and falls on a fixed batch."""
    from raypost.recipes import dept

    flat = {"method": "dept", "model": "tiny:bert", "batch_size": 4, "prompt_length": 3, "lowrank_rank": 2,
            "max_input_length": 224, "train_k": "1", "train_per_k": 8, "eval_k": "1", "eval_per_k": 4,
            "lr_prompt": 0.3, "lr_lowrank": 0.05, "lr_head": 0.05, "seed": 0}
    first = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        setup = dept.setup(flat, 0, 1)
        cfg = TrainConfig(batch_size=4, device="cpu", precision=precision, steps=8, lr_schedule="constant",
                          warmup_ratio=0.0)
        engine, _ = initialize_engine(setup.model, setup.param_groups, cfg, 1, torch.device("cpu"))
        engine.eval()  # no dropout: a clean before/after on the same batch
        batch = next(setup.train_batches)
        losses = []
        for _ in range(8):
            loss = setup.compute_loss(engine, batch)
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
        first[precision] = losses[0]
        dtypes = {p.dtype for p in engine.module.parameters()}
        assert dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}, (precision, dtypes)
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.1, (precision, losses)
        metrics = setup.evaluate(engine.module)
        assert 0 <= metrics["eval_accuracy"] <= 1 and math.isfinite(metrics["eval_loss"])
    assert first["bf16"] == pytest.approx(first["fp32"], rel=2e-2)  # bf16 rounding, not a different model
