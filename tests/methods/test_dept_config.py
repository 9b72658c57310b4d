"""DePT's budget arithmetic and config validation (no models, instant)."""

import dataclasses

import pytest

from raypost.errors import ConfigError
from raypost.methods.dept import DeptConfig, dept_param_count, rank_for_budget

PAPER_BUDGET, PAPER_D, PAPER_S = 76_800, 768, 256


@pytest.mark.parametrize("m, r", [(100, 0), (60, 30), (40, 45), (0, 75)])
def test_paper_budget_table(m, r):
    assert rank_for_budget(PAPER_BUDGET, m, PAPER_S, PAPER_D) == r
    assert dept_param_count(m, r, PAPER_S, PAPER_D) == PAPER_BUDGET


def test_non_exact_budget_rounds_rank_down_and_never_exceeds():
    r = rank_for_budget(PAPER_BUDGET + 1000, 60, PAPER_S, PAPER_D)  # 1000 < s + d: not one more rank
    assert r == 30
    assert dept_param_count(60, r, PAPER_S, PAPER_D) == PAPER_BUDGET <= PAPER_BUDGET + 1000


def test_budget_below_the_prompt_names_value_and_limit():
    with pytest.raises(ConfigError, match=r"param_budget=1000 is below the prompt alone: "
                                          r"prompt_length=100 x hidden size d=768 = 76800"):
        rank_for_budget(1000, 100, PAPER_S, PAPER_D)


def test_budget_below_one_rank_without_prompt():
    with pytest.raises(ConfigError, match=r"param_budget=500 is below one rank .*= 1024\) with prompt_length=0"):
        rank_for_budget(500, 0, PAPER_S, PAPER_D)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt_length=-1), r"prompt_length=-1 is below its minimum 0"),
    (dict(lowrank_rank=-2), r"lowrank_rank=-2 is below its minimum 0"),
    (dict(max_input_length=0), r"max_input_length=0 is below its minimum 1"),
    (dict(prompt_length=0, lowrank_rank=0), r"prompt_length=0 and lowrank_rank=0 leave DePT nothing to train"),
    (dict(lowrank_rank=8, param_budget=76_800), r"lowrank_rank=8 and param_budget=76800 are both set"),
    (dict(param_budget=0), r"param_budget=0 is below its minimum 1"),
    (dict(prompt_init="random"), r"prompt_init='random' is not one of vocab, text"),
    (dict(prompt_init="text"), r"prompt_init='text' needs a non-empty prompt_init_text"),
    (dict(lr_prompt=0.0), r"lr_prompt=0.0 must be above 0"),
    (dict(lowrank_alpha=-1.0), r"lowrank_alpha=-1.0 must be above 0"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DeptConfig(**kwargs)


def test_config_defaults_and_flat_dict():
    assert DeptConfig().lowrank_rank == 30  # the paper's T5-base split, m=60 / r=30
    assert DeptConfig(param_budget=76_800).lowrank_rank is None  # derived once d is known
    assert all(f.metadata["help"] for f in dataclasses.fields(DeptConfig))
    cfg = DeptConfig(**{"prompt_length": 40, "param_budget": 76_800, "lr_lowrank": 1e-3})  # a flat trial dict
    assert (cfg.prompt_length, cfg.param_budget, cfg.lr_lowrank) == (40, 76_800, 1e-3)
