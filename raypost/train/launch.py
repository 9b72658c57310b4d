"""One trial as a Ray Train V2 ``TorchTrainer`` job: workers, failure handling, checkpoints.

Used by every Tune trial of a sweep (``raypost.tune``; ``raypost train`` is a one-trial sweep).
"""

from __future__ import annotations

from dataclasses import dataclass

from raypost.configs import check

# Ray placement-group strategies for a trial's workers (Ray's own names; PACK is Ray's default):
#   PACK           as few nodes as possible; spills onto more nodes when one cannot hold them all
#   SPREAD         one worker per node where possible; falls back to sharing nodes (e.g. after a
#                  node is lost, the restarted group may pack onto the remaining node)
#   STRICT_PACK    all workers on one node, or the trial waits
#   STRICT_SPREAD  every worker on a different node, or the trial waits
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class Scaling:
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    placement_strategy: str = "PACK"

    def __post_init__(self):
        check(self.workers >= 1, f"--workers={self.workers} must be at least 1")
        check(self.gpus_per_worker >= 0, f"--gpus-per-worker={self.gpus_per_worker} must be >= 0")
        check(self.placement_strategy in PLACEMENT_STRATEGIES,
              f"--placement={self.placement_strategy} must be one of {', '.join(PLACEMENT_STRATEGIES)}")

    def ray(self):
        from ray.train import ScalingConfig

        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return ScalingConfig(num_workers=self.workers, use_gpu=self.gpus_per_worker > 0,
                             resources_per_worker=resources, placement_strategy=self.placement_strategy)


def build_trainer(config: dict, scaling: Scaling, name: str, storage: str, *, metric: str, mode: str,
                  keep_checkpoints: int = 2, max_failures: int = 2, callbacks=()):
    """A ``TorchTrainer`` for ``config``. Calling ``fit()`` again with the same name and storage
    resumes from the run's latest checkpoint (Train V2 restores by run name)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raypost import knobs
    from raypost.train._internal.loop import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling.ray(),
        # gloo on CPU, nccl on GPU: follows the resources, never hard-coded
        torch_config=TorchConfig(backend="nccl" if scaling.gpus_per_worker else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=storage, callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints,
                                               checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode),
            failure_config=FailureConfig(max_failures=max_failures),
            # Ray Train's own switch for its console lines ("Reporting training result ...",
            # "Checkpoint successfully created ..."); its log files keep everything
            logging_config=LoggingConfig(log_level="INFO" if knobs.console() == "verbose" else "WARNING")),
    )
