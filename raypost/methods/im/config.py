"""``ImConfig``: the knobs of Instruction Modelling (Shi et al., NeurIPS 2024)."""

from __future__ import annotations

from dataclasses import dataclass

from raypost.configs import check, check_choice, check_range, field

CHAT_TEMPLATES = ("auto", "paper", "tokenizer")
TRAINABLES = ("full", "lora", "dept")


@dataclass
class ImConfig:
    """Field names are unique across all config classes (a trial config is one flat dict)."""

    instruction_weight: float = field(
        1.0, help="Loss weight lambda of instruction tokens: 0 = output-only instruction tuning, "
                  "1 = Instruction Modelling (loss over instructions too); template tokens always weigh 0.")
    chat_template: str = field(
        "auto", help="'paper': <|user|>\\n{instruction}\\n<|assistant|>\\n{output}</s> (Tulu/IM format); "
                     "'tokenizer': the tokenizer's own chat template (apply_chat_template); 'auto': the "
                     "tokenizer's when it has one (an instruction-tuned model such as smollm2), else 'paper'.")
    max_seq_length: int = field(
        512, help="Max tokens per row; longer rows lose their oldest tokens, never output tokens.")
    trainable: str = field("lora", help="What trains: full (all weights), lora (PEFT LoRA) or dept.")
    lr: float = field(1e-4, help="Learning rate of the trainable weights (full or lora).")
    lora_rank: int = field(8, help="LoRA rank r.")
    lora_alpha: float = field(16.0, help="LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = field(0.05, help="Dropout on the LoRA input.")
    lora_targets: str = field(
        "auto", help="Comma-separated module names LoRA wraps; 'auto' = attention projections of "
                     "GPT-2, Llama, T5 or BERT.")

    def __post_init__(self):
        check_range("instruction_weight", self.instruction_weight, 0.0, 1.0)
        check_choice("chat_template", self.chat_template, CHAT_TEMPLATES)
        check_range("max_seq_length", self.max_seq_length, 8)
        check_choice("trainable", self.trainable, TRAINABLES)
        check(self.lr > 0, f"lr={self.lr} must be positive")
        check_range("lora_rank", self.lora_rank, 1)
        check(self.lora_alpha > 0, f"lora_alpha={self.lora_alpha} must be positive")
        check_range("lora_dropout", self.lora_dropout, 0.0, 0.99)
        check(bool(self.lora_targets.strip()), "lora_targets is empty; use 'auto' or module names")
