"""The DeepSpeed engine every trial worker builds (initialize_engine), in-process on a one-rank
gloo group: ZeRO stage and optimizer from the config, one learning rate per parameter group."""

import os
import socket

import pytest
import torch
import torch.distributed as dist

from raypost.train._internal.deepspeed_config import initialize_engine
from raypost.train.config import TrainConfig


@pytest.fixture
def one_rank_group(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                           LOCAL_RANK="0", LOCAL_WORLD_SIZE="1").items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", init_method="env://", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_engine_is_zero1_with_a_learning_rate_per_group(one_rank_group):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    groups = [{"params": [model.weight], "lr": 0.1, "name": "w"}, {"params": [model.bias], "lr": 0.01, "name": "b"}]
    cfg = TrainConfig(batch_size=2, zero_stage=1, device="cpu")
    engine, optimizer = initialize_engine(model, groups, cfg, 1, torch.device("cpu"))

    assert type(optimizer).__name__ == "DeepSpeedZeroOptimizer" and engine.zero_optimization_stage() == 1
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]  # each group keeps its own lr
    before = model.weight.detach().clone()
    loss = engine(torch.ones(2, 4)).pow(2).mean()
    engine.backward(loss)
    engine.step()
    assert not torch.equal(before, engine.module.weight.detach())  # a real step was taken
