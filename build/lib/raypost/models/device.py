"""Where a model runs: the one place that turns a ``device`` setting into a ``torch.device``."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the current CUDA device when one is visible, else the CPU. Inside a Ray Train
    worker ``torch.cuda.current_device()`` is the GPU Ray assigned to it (Ray sets
    ``CUDA_VISIBLE_DEVICES`` and the loop calls ``torch.cuda.set_device``)."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from raypost.errors import ConfigError

        raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or cpu")
    return torch.device("cuda", torch.cuda.current_device())
