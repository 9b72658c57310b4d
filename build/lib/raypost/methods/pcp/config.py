"""``PcpConfig``: the knobs of prompt-based continued pre-training (Shi & Lipani, NeurIPS 2023)."""

from __future__ import annotations

from dataclasses import dataclass

from raypost.configs import check, check_range, field
from raypost.methods.pcp.template import PromptTemplate, parse_verbalizer


@dataclass
class PcpConfig:
    """Field names are unique across all config classes (a trial config is one flat dict)."""

    template: str = field("{text} Answer: {mask}.",
                          help="Prompt with {field} slots filled from each row and exactly one {mask} slot.")
    verbalizer: str = field("stepgame", help="'stepgame' (default StepGame label words that are single tokens "
                                             "for the tokenizer) or 'label:word,label:word,...'.")
    mask_prob: float = field(0.15, help="Stage 1: probability that a token is masked for the MLM loss.")
    cpt_steps: int = field(100, help="Stage 1: continued pre-training steps on templated texts (0 skips it).")
    cpt_lr: float = field(1e-4, help="Stage 1: learning rate of continued pre-training.")
    pseudo_label_steps: int = field(0, help="0: stage 1's template slot holds [MASK]. N > 0 (needs cpt_steps > 0): "
                                            "first train stage 2's prompt classifier from the original weights for "
                                            "N steps at ft_lr on the labelled rows, fill each unlabelled text's "
                                            "slot with the label word it predicts, then restore the original "
                                            "weights before stage 1 (the paper's PCP with pseudo-labels).")
    ft_lr: float = field(1e-5, help="Stage 2: learning rate of prompt-based fine-tuning.")
    max_prompt_length: int = field(256, help="Max tokens of a templated input; the longest text field is cut, "
                                             "never the template or its mask.")

    def __post_init__(self):
        PromptTemplate(self.template)  # raises ConfigError naming the template
        parse_verbalizer(self.verbalizer)
        check(0 < self.mask_prob < 1, f"mask_prob={self.mask_prob} must be between 0 and 1")
        check_range("cpt_steps", self.cpt_steps, 0)
        check(self.cpt_lr > 0, f"cpt_lr={self.cpt_lr} must be positive")
        check_range("pseudo_label_steps", self.pseudo_label_steps, 0)
        check(not (self.pseudo_label_steps and not self.cpt_steps),
              f"pseudo_label_steps={self.pseudo_label_steps} needs cpt_steps > 0 (pseudo-labels only fill stage 1's "
              "texts, and cpt_steps=0 skips stage 1); set cpt_steps > 0 or pseudo_label_steps=0")
        check(self.ft_lr > 0, f"ft_lr={self.ft_lr} must be positive")
        check_range("max_prompt_length", self.max_prompt_length, 8)
