"""Prompt-based continued pre-training (Shi & Lipani, "Don't Stop Pretraining? Make Prompt-based
Fine-tuning Powerful Learner", NeurIPS 2023).

Stage 1 continues masked-LM pre-training on task texts written into the prompt template; stage 2
fine-tunes the MLM head at the template's mask slot, restricted to the verbalizer's label words.
See docs/pcp.md.
"""

from raypost.methods.pcp.config import PcpConfig
from raypost.methods.pcp.mlm import (
    fresh_head_keys,
    load_mlm,
    mlm_batches,
    mlm_loss,
    pcp_texts,
)
from raypost.methods.pcp.model import PromptMLMClassifier
from raypost.methods.pcp.template import (
    STEPGAME_CHARS,
    STEPGAME_LABELS,
    STEPGAME_WORDS,
    PromptTemplate,
    Verbalizer,
    make_verbalizer,
    parse_verbalizer,
)

__all__ = [
    "STEPGAME_CHARS", "STEPGAME_LABELS", "STEPGAME_WORDS", "PcpConfig", "PromptMLMClassifier", "PromptTemplate",
    "Verbalizer", "fresh_head_keys", "load_mlm", "make_verbalizer", "mlm_batches",
    "mlm_loss", "parse_verbalizer", "pcp_texts",
]
