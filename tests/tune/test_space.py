"""The shipped search spaces load, validate and become Optuna distributions."""

from __future__ import annotations

import optuna.distributions as od
import pytest

from raypost.errors import ConfigError
from raypost.tune.space import default_space_file, load_space, parse_overrides


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


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    """``5e-4`` without a dot is a string to PyYAML (YAML 1.1) and a learning rate would refuse it;
    space files, run configs and --set read it as the number everybody means."""
    from raypost.tune.space import load_space, parse_overrides

    assert parse_overrides(["lr=5e-4", "train_k=1-2", "x=1E3", "name=abc", "q='1e2'"]) == {
        "lr": 5e-4, "train_k": "1-2", "x": 1000.0, "name": "abc", "q": "1e2"}
    path = tmp_path / "space.yaml"
    path.write_text("method: dept\nsamples: 1\nfixed: {model: tiny:bert, steps: 4, eval_every: 2}\n"
                    "search:\n  lr_prompt: {type: float, low: 1e-3, high: 3e-2, log: true}\n")
    space = load_space(path, "dept", parse_overrides(["lr_head=2e-3"]))
    assert space.search["lr_prompt"]["low"] == 1e-3 and space.fixed["lr_head"] == 2e-3


def test_a_number_set_for_a_text_key_is_that_text():
    """`--set train_k=1` (what a shell user types) is the k list "1", not a type error; a number
    key still refuses text."""
    space = load_space(default_space_file("dept"), "dept", parse_overrides(["train_k=1", "eval_k=2", "steps=7"]))
    assert space.fixed["train_k"] == "1" and space.fixed["eval_k"] == "2" and space.fixed["steps"] == 7
    with pytest.raises(ConfigError, match=r"^--set steps='x' must be a whole number$"):
        load_space(default_space_file("dept"), "dept", parse_overrides(["steps=x"]))
