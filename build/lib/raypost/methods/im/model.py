"""The trainable part of an IM run: full fine-tuning, LoRA (PEFT) or DePT."""

from __future__ import annotations

from typing import Any

from torch import nn

from raypost.errors import ConfigError
from raypost.methods.im.config import ImConfig
from raypost.models import BaseModel

# Attention projections per architecture (``config.model_type``); GPT-2's are Conv1D layers.
LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "t5": ["q", "k", "v", "o"],
    "bert": ["query", "key", "value"],
}
TASK_TYPES = {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def lora_target_modules(model: nn.Module, lora_targets: str = "auto") -> list[str]:
    if lora_targets != "auto":
        return [name.strip() for name in lora_targets.split(",") if name.strip()]
    model_type = getattr(model.config, "model_type", None)
    if model_type not in LORA_TARGETS:
        raise ConfigError(f"no default LoRA targets for model type {model_type!r}; "
                          "set lora_targets to comma-separated module names")
    return LORA_TARGETS[model_type]


def make_trainable(base: BaseModel, cfg: ImConfig, dept_config: Any = None) -> tuple[nn.Module, list[dict]]:
    """Wrap ``base.model`` as ``cfg.trainable`` says; return (module, optimizer param groups).

    ``full`` trains every weight; ``lora`` freezes the base and trains PEFT LoRA adapters;
    ``dept`` builds ``raypost.methods.dept.DeptModel(base, dept_config)`` (imported lazily) and
    uses its ``param_groups()`` (prompt and low-rank parts at their own rates).
    """
    if base.kind not in TASK_TYPES:
        raise ConfigError(f"IM trains causal or seq2seq language models, not kind {base.kind!r}")
    if base.kind == "seq2seq" and cfg.instruction_weight != 0:
        raise ConfigError(f"instruction_weight={cfg.instruction_weight} needs a causal LM: an encoder-decoder "
                          "reads the instruction in its encoder, so only instruction_weight=0 applies")
    if cfg.trainable == "full":
        model = base.model
        model.requires_grad_(True)
    elif cfg.trainable == "lora":
        from peft import LoraConfig, get_peft_model

        targets = lora_target_modules(base.model, cfg.lora_targets)
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, task_type=TASK_TYPES[base.kind],
                          fan_in_fan_out=base.model.config.model_type == "gpt2")
        try:
            model = get_peft_model(base.model, lora)
        except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
            raise ConfigError(f"lora_targets={cfg.lora_targets!r}: {str(exc).splitlines()[0]}") from exc
    else:
        if dept_config is None:
            raise ConfigError("trainable='dept' needs a DePT config (prompt_length, lowrank_rank, ...)")
        if cfg.max_seq_length > dept_config.max_input_length:
            raise ConfigError(f"max_seq_length={cfg.max_seq_length} exceeds DePT's max_input_length="
                              f"{dept_config.max_input_length}; IM rows would not fit DePT's offset rows")
        from raypost.methods.dept import DeptModel  # lazy: DePT is an optional, separate method

        model = DeptModel(base, dept_config)
        return model, model.param_groups()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, [{"name": cfg.trainable, "params": params, "lr": cfg.lr}]
