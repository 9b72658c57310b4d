"""``DeptConfig``: the DePT knobs of one trial.

Field names are unique across all config classes because a trial config is one flat dict
(also the MLflow params): hence ``lowrank_rank`` rather than ``rank`` (a Ray worker has a rank
too), ``max_input_length`` rather than ``max_length``, ``param_budget`` rather than ``budget``.
"""

from __future__ import annotations

from dataclasses import dataclass

from raypost.configs import check, check_choice, check_range, field

PROMPT_INITS = ("vocab", "text")
# How an encoder classifier reads its input (generative kinds answer in words and ignore it):
#   pooler      prompt at position 0, the frozen pooler + head read position 0 (= the first prompt
#               vector): PEFT's PeftModelForSequenceClassification behaviour
#   cls         prompt inserted after [CLS]: the frozen pooler reads [CLS], as it was pre-trained
#   mean        mean of the last hidden states over the real tokens (prompt and pads left out), head on it
#   cls_pooler  as cls, with the pooler trained too (its d*d + d weights count as head parameters)
READOUTS = ("auto", "pooler", "cls", "mean", "cls_pooler")
DEFAULT_READOUT = "mean"  # measured: benchmarks/learning.py, docs/dept.md
DEFAULT_RANK = 30  # the paper's pick for T5-base: m=60, r=30 at s=256 is the 76,800 budget


@dataclass
class DeptConfig:
    prompt_length: int = field(60, help="m: soft-prompt vectors prepended to the input (0 = pure low-rank).")
    lowrank_rank: int | None = field(
        None, help="r: rank of the offset A (s x r) @ B (r x d); 0 = vanilla prompt tuning. "
        "Leave unset to derive it from param_budget (or use 30 when param_budget is unset too).")
    max_input_length: int = field(256, help="s: longest input in tokens; A has one row per input position.")
    lowrank_alpha: float = field(1.0, help="Offset scale: scaling = lowrank_alpha / sqrt(r).")
    prompt_init: str = field("vocab", help="Prompt init: 'vocab' (embeddings of sampled tokens) or 'text'.")
    prompt_init_text: str = field("", help="Text whose token embeddings initialise the prompt (prompt_init='text').")
    adapter_init_seed: int = field(0, help="Seed for the sampled prompt tokens and A's Kaiming init.")
    lr_prompt: float = field(0.3, help="Learning rate of the prompt P (paper: 0.3 or 0.4).")
    lr_lowrank: float = field(1e-4, help="Learning rate of A and B (paper: 1e-4 .. 5e-3).")
    lr_head: float = field(1e-3, help="Learning rate of a classifier head (classifier models only).")
    readout: str = field("auto", help="Encoder classifiers: how the head reads the input: pooler (on the "
                                      "first prompt vector, as PEFT), cls (prompt after [CLS]), mean (mean "
                                      "of real tokens), cls_pooler (cls + trainable pooler); auto = the "
                                      "measured default (docs/dept.md).")
    param_budget: int | None = field(
        None, help="Trainable-parameter budget m*d + r*(s+d); when set, r = floor((budget - m*d) / (s+d)).")

    def __post_init__(self):
        check_range("prompt_length", self.prompt_length, 0)
        check_range("max_input_length", self.max_input_length, 1)
        check(self.lowrank_alpha > 0, f"lowrank_alpha={self.lowrank_alpha} must be above 0")
        for name in ("lr_prompt", "lr_lowrank", "lr_head"):
            check(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be above 0")
        check_choice("prompt_init", self.prompt_init, PROMPT_INITS)
        check_choice("readout", self.readout, READOUTS)
        check(self.prompt_init != "text" or self.prompt_init_text.strip() != "",
              "prompt_init='text' needs a non-empty prompt_init_text")
        if self.param_budget is not None:
            # r depends on the model's hidden size d, so DeptModel derives it (rank_for_budget)
            check(self.lowrank_rank is None, f"lowrank_rank={self.lowrank_rank} and param_budget={self.param_budget} "
                  "are both set; set one (param_budget derives the rank from prompt_length)")
            check_range("param_budget", self.param_budget, 1)
            return
        if self.lowrank_rank is None:
            self.lowrank_rank = DEFAULT_RANK
        check_range("lowrank_rank", self.lowrank_rank, 0)
        check(self.prompt_length > 0 or self.lowrank_rank > 0,
              "prompt_length=0 and lowrank_rank=0 leave DePT nothing to train; set at least one above 0")


def check_readout(readout: str, kind: str, model: str) -> None:
    """A read-out mode names how an encoder classifier reads its input; generative kinds answer in
    words, so only ``auto`` fits them."""
    check(kind == "classifier" or readout == "auto",
          f"readout={readout!r} is how an encoder classifier reads its input; model {model!r} is {kind}, "
          "which answers in words (leave readout=auto)")
