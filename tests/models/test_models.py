"""Base-model loading, sizes read from configs without weights, and device selection."""

from __future__ import annotations

import pytest
import torch

from raypost.configs import split_flat
from raypost.errors import ConfigError
from raypost.models import load_base, load_tokenizer, pick_device
from raypost.models.dims import default_kind, hidden_size, max_positions
from raypost.recipes.train_config import TrainConfig


@pytest.mark.parametrize("name, kind, d, positions", [
    ("minilm", "classifier", 384, 512), ("tiny:bert", "classifier", 32, 512), ("tiny:gpt2", "causal", 32, None),
    ("tiny:t5", "seq2seq", 32, None)])
def test_sizes_come_from_the_config_and_match_the_loaded_model(name, kind, d, positions):
    assert default_kind(name) == kind and hidden_size(name) == d
    if positions is not None:
        assert max_positions(name) == positions
    base = load_base(name, kind, num_labels=9 if kind == "classifier" else None)
    assert base.hidden_size == d and base.kind == kind
    assert base.model.get_input_embeddings().weight.shape[1] == d
    assert base.tokenizer.pad_token_id is not None  # causal tokenizers get one
    assert type(load_tokenizer(name)) is type(base.tokenizer)


def test_minilm_is_the_pretrained_encoder():
    """The shipped weights, not a random init: the same sentence twice gives the same [CLS] vector,
    and the word embeddings have MiniLM's trained scale (a fresh init would be ~0.02 everywhere)."""
    base = load_base("minilm", "classifier", num_labels=9, seed=0)
    emb = base.model.get_input_embeddings().weight
    assert 0.03 < float(emb.detach().std()) < 0.1
    assert base.tokenizer.tokenize("A is to the left of B.")[:3] == ["a", "is", "to"]  # uncased WordPiece


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="device=cuda but no CUDA device is visible"):
            pick_device("cuda")


@pytest.mark.parametrize("key, value, message", [
    ("steps", 4.5, "steps=4.5 must be a whole number"), ("steps", True, "steps=True must be a whole number"),
    ("steps", "abc", "steps='abc' must be a whole number"), ("model", 123, "model=123 must be text"),
    ("max_grad_norm", "x", "max_grad_norm='x' must be a number"), ("offload_optimizer", 1, "must be true or false"),
    ("lr_schedule", "step", "lr_schedule='step' is not one of constant, linear, cosine"),
    ("warmup_steps", 101, "warmup_steps=101 is longer than steps=100"),
])
def test_every_config_value_is_typed_and_named(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_flat({key: value}, TrainConfig)
    assert split_flat({"max_grad_norm": 1, "steps": 7}, TrainConfig)[0].steps == 7  # an int is a number
