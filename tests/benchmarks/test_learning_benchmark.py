"""The pure parts of ``benchmarks/learning.py`` (no Ray, no training): the arms' trial configs are
valid raypost configs at equal budget, and curves turn into times to accuracy and the DePT/PT ratio."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def learning():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("learning", BENCH / "learning.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_every_arm_is_a_valid_space_at_equal_budget(learning, tmp_path):
    from raypost.tune.space import validate_space

    (tmp_path / "qa1_valid.json").write_text('{"0": {"story": ["A is left of B."], "question": '
                                             '"What is the relation of the agent A to the agent B?", "label": "left"}}')
    args = learning.parse_args(["--arms", "finetune", "pt", "dept", "readout", "--eval-data", str(tmp_path)])
    assert args.arms == ["finetune", "pt", "dept", "readout-pooler", "readout-cls", "readout-mean", "readout-cls_pooler"]
    for arm in args.arms:
        method, flat = learning.arm_config(args, arm)
        space = validate_space({"method": method, "samples": 1, "fixed": flat}, method)
        assert space.fixed["steps"] == args.steps and space.fixed["lr_schedule"] == "linear"
    _, pt = learning.arm_config(args, "pt")
    _, dept = learning.arm_config(args, "dept")
    assert pt["prompt_length"] * 384 == dept["param_budget"] == 15360  # PT spends the budget DePT splits
    with pytest.raises(SystemExit):
        learning.parse_args(["--arms", "lora"])


def test_time_to_accuracy_and_ratio(learning):
    curve = [{"step": 100, "accuracy": 0.4, "train_s": 60.0, "cpu_s": 110.0},
             {"step": 200, "accuracy": 0.72, "train_s": 121.0, "cpu_s": 230.0},
             {"step": 300, "accuracy": 0.69, "train_s": 180.0, "cpu_s": 350.0}]
    assert learning.first_reach(curve, 0.5) == {"step": 200, "train_s": 121.0, "cpu_s": 230.0}
    assert learning.first_reach(curve, 0.9) is None
    pt = {"to_threshold": {"0.5": {"train_s": 100.0}, "0.7": {"train_s": 200.0}, "0.9": None}}
    dept = {"to_threshold": {"0.5": {"train_s": 50.0}, "0.7": None, "0.9": None}}
    assert learning.ratios({"pt": pt, "dept": dept}) == {"0.5": 0.5, "0.7": None, "0.9": None}
