"""The one StepGame evaluator every recipe uses: sharded over ranks and gathered, the same
numbers as on one rank, and predictions reused while the weights are unchanged."""

from __future__ import annotations

import pytest
import torch

from raypost.stepgame import LABELS, generate
from raypost.stepgame.task import StepgameEvaluator


class Scripted(torch.nn.Module):
    """Answers row i with LABELS[i % 9] when w = 0 (a fixed, checkable answer per row)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def make(rows, calls, rank=0, world=1, gather=None):
    def predict(module, idx):
        calls.append((rank, list(idx)))
        shift = int(module.w.item())
        return [LABELS[(i + shift) % 9] for i in idx], float(sum(idx)) / max(len(idx), 1)  # loss: mean row index

    return StepgameEvaluator(rows, predict, rank=rank, world_size=world, gather=gather)


def test_sharded_evaluation_equals_one_rank():
    rows = generate(1, 20, seed=3)
    model = Scripted()
    single = make(rows, calls := []).evaluate(model)
    assert calls == [(0, list(range(20)))]
    truth = sum(LABELS[i % 9] == r["label"] for i, r in enumerate(rows)) / 20
    assert single == {"eval_accuracy": pytest.approx(truth), "eval_loss": pytest.approx(9.5)}

    # rank 1 answers its shard first; rank 0 then gathers both shards (what all_gather_object returns)
    parts = {}
    rank1 = make(rows, calls1 := [], rank=1, world=3, gather=lambda obj, world: parts.setdefault(1, obj) and [])
    rank1.predictions(model)
    rank2 = make(rows, [], rank=2, world=3, gather=lambda obj, world: parts.setdefault(2, obj) and [])
    rank2.predictions(model)
    rank0 = make(rows, calls0 := [], rank=0, world=3, gather=lambda obj, world: [obj, parts[1], parts[2]])
    assert calls1 == [(1, list(range(1, 20, 3)))] and calls0 == []
    assert rank0.evaluate(model) == single  # same accuracy, same loss (weighted by shard size)
    assert calls0 == [(0, list(range(0, 20, 3)))]


def test_predictions_are_reused_until_the_weights_change(tmp_path):
    rows = generate(1, 6, seed=1)
    model = Scripted()
    evaluator = make(rows, calls := [])
    first = evaluator.evaluate(model)
    metrics = evaluator.final_evaluate(model, tmp_path)
    assert len(calls) == 1 and metrics["stepgame_acc"] == pytest.approx(first["eval_accuracy"])
    with torch.no_grad():
        model.w.data.add_(1.0)  # as DeepSpeed updates: through .data
    evaluator.evaluate(model)
    assert len(calls) == 2
