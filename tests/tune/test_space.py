"""The shipped search spaces load, validate and become Optuna distributions."""

from __future__ import annotations

import optuna.distributions as od

from raypost.tune.space import default_space_file, load_space


def test_default_dept_space_builds_optuna_distributions():
    space = load_space(default_space_file("dept"), "dept")
    dists = space.optuna_space()
    m = dists["prompt_length"]
    assert isinstance(m, od.IntDistribution) and (m.low, m.high, m.step) == (0, 40, 1)
    assert isinstance(dists["lr_lowrank"], od.FloatDistribution) and dists["lr_lowrank"].log
    lr = dists["lr_prompt"]
    assert isinstance(lr, od.FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-3, 3e-2)
    assert space.metric == "eval_accuracy" and space.mode == "max"
    assert (space.workers, space.cpus_per_worker) == (1, 2.0)  # one 2-thread worker: measured faster on 2 cores
    assert space.fixed["lr_schedule"] == "linear" and space.fixed["readout"] == "auto"
