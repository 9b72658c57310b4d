"""``TrainConfig``: the method-independent knobs of one trial's training loop (every recipe lists it).

Device, precision and DeepSpeed settings live here and nowhere else, so the same code runs
on a laptop CPU and on a GPU cluster: only the config changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from raypost.configs import check, check_choice, check_range, field

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("constant", "linear", "cosine")  # each after a linear warm-up (transformers' get_scheduler)


@dataclass
class TrainConfig:
    method: str = field("dept", help="Post-training method: a registered name (raypost sweep --help lists them) "
                                     "or the module path of your own recipe.")
    model: str = field("minilm", help="Base model: HF id, local path, 'minilm' or 'tiny:<arch>'.")
    steps: int = field(100, help="Optimizer steps per trial.")
    batch_size: int = field(8, help="Micro-batch size per worker.")
    grad_accum: int = field(1, help="Gradient-accumulation steps (DeepSpeed).")
    eval_every: int = field(25, help="Evaluate, report to Tune and checkpoint every N steps.")
    seed: int = field(0, help="Seed for data order and initialisation.")
    device: str = field("auto", help="auto (CUDA when present), cpu or cuda.")
    precision: str = field("fp32", help="fp32, bf16, or fp16 (CUDA only).")
    zero_stage: int = field(1, help="DeepSpeed ZeRO stage 0-3.")
    zero3_persistence_threshold: int = field(100_000, help="ZeRO-3 keeps weights of fewer elements than this "
                                                           "whole on every rank (DeepSpeed's "
                                                           "stage3_param_persistence_threshold).")
    offload_optimizer: bool = field(False, help="ZeRO-Offload the optimizer state to CPU.")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm (0 disables).")
    lr_schedule: str = field("linear", help="Learning-rate schedule after warm-up: constant, linear (decay to 0) "
                                            "or cosine (to 0). Each optimizer group keeps its own peak lr.")
    warmup_steps: int = field(0, help="Linear warm-up from 0 to each group's peak lr over this many steps "
                                      "(0: use warmup_ratio).")
    warmup_ratio: float = field(0.1, help="Warm-up as a fraction of steps, when warmup_steps is 0.")

    def __post_init__(self):
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("grad_accum", self.grad_accum, 1)
        check_range("eval_every", self.eval_every, 1)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("zero_stage", self.zero_stage, (0, 1, 2, 3))
        check_range("zero3_persistence_threshold", self.zero3_persistence_threshold, 0)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        check(self.warmup_steps <= self.steps,
              f"warmup_steps={self.warmup_steps} is longer than steps={self.steps}; warm up over at most steps")
        check(not (self.precision == "fp16" and self.device == "cpu"),
              "precision=fp16 needs a CUDA device; use fp32 or bf16 on CPU")

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps``, else ``warmup_ratio`` of ``steps`` (rounded up)."""
        import math

        return self.warmup_steps or math.ceil(self.warmup_ratio * self.steps)
