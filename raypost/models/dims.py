"""What a base model is, read cheaply from its config (no weights): input-embedding width d and
the model kind a StepGame recipe uses by default.

Search-space checks run on the sweep driver before any trial starts (DePT's budget depends on d),
and ``model_kind: auto`` is resolved on every worker, so neither may load a model's weights.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from raypost.errors import ConfigError
from raypost.models.loading import TINY_ARCHS, resolve_model_name

TINY_HIDDEN_SIZE = 32  # the width raypost.models.loading._tiny builds every tiny model with
TINY_KINDS = {"bert": "classifier", "gpt2": "causal", "llama": "causal", "t5": "seq2seq"}
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@lru_cache(maxsize=32)
def _hf_config(name: str):
    from transformers import AutoConfig

    path = resolve_model_name(name)
    if (os.path.sep in path or path.startswith((".", "~"))) and not Path(path).expanduser().exists():
        raise ConfigError(f"model path {path!r} does not exist (give a local folder or a Hugging Face id)")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config of model {name!r}: {str(exc).splitlines()[0]}") from None


def _tiny_arch(name: str) -> str:
    arch = name.split(":", 1)[1]
    if arch not in TINY_ARCHS:
        raise ConfigError(f"tiny model {arch!r} is unknown; expected one of {', '.join(TINY_ARCHS)}")
    return arch


def hidden_size(name: str) -> int:
    """Width d of the input embeddings of ``name`` (what DePT's prompt rows and B's columns have)."""
    if name.startswith("tiny:"):
        _tiny_arch(name)
        return TINY_HIDDEN_SIZE
    config = _hf_config(name)
    # ALBERT-style models embed narrower than their hidden layers; DePT works on the embeddings
    d = getattr(config, "embedding_size", None) or getattr(config, "hidden_size", None)
    if not d:
        raise ConfigError(f"model {name!r}: its config names no hidden_size or embedding_size")
    return int(d)


def default_kind(name: str) -> str:
    """``classifier`` for encoder-only models, ``seq2seq`` for encoder-decoders, ``causal`` for decoders."""
    if name.startswith("tiny:"):
        return TINY_KINDS[_tiny_arch(name)]
    config = _hf_config(name)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if any(a.endswith(_CAUSAL_SUFFIXES) for a in config.architectures or ()):
        return "causal"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # no telling architecture (e.g. MiniLM's plain 'BertModel'): encoders are the families with a
    # masked-LM head; decoder-only families have a causal-LM class and no masked-LM one
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "classifier"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise ConfigError(f"cannot tell the kind of model {name!r} (model_type={config.model_type!r}); "
                      "set model_kind to classifier, seq2seq or causal")


def max_positions(name: str) -> int | None:
    """Longest sequence the model's position embeddings allow (None: relative positions, e.g. T5)."""
    if name.startswith("tiny:"):
        _tiny_arch(name)
        return None if name == "tiny:t5" else 512  # the tiny configs' max_position_embeddings / n_positions
    config = _hf_config(name)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
