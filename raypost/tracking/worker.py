"""Metric logging from inside a training worker (rank 0 only).

Metrics are buffered and sent with one ``log_batch`` per evaluation interval, or every
``knobs.progress_interval()`` seconds (30) when evaluations are further apart, so the hot loop never waits on the
tracking server. With that flush the worker writes its progress (step, total, steps/s) into the
run's ``raypost.progress`` tag, which the sweep's console reads (raypost/tune/progress.py).
Metrics arrive under raypost's flat names and leave under their MLflow keys; the loop's constants
become tags (``raypost.tracking.metric_keys``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from raypost import knobs
from raypost.tracking.metric_keys import REPLICA_TAG, STEP_TAG, split_constants

PROGRESS_TAG = "raypost.progress"


class WorkerLogger:
    def __init__(self, run_id: str | None, tracking_uri: str | None, enabled: bool):
        self.enabled = bool(enabled and run_id)
        self.run_id = run_id
        self._pending: list = []
        self._tags: dict[str, str] = {}  # sent with the next flush
        self._replica_max = 0.0  # the largest replica difference so far (REPLICA_TAG)
        self._mark: tuple[int, float] | None = None  # (step, time) of the last progress tag
        self._interval = knobs.progress_interval()  # read once, not on every training step
        if self.enabled:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def log_params(self, params: dict) -> None:
        if self.enabled:
            from mlflow.entities import Param

            run = self.client.get_run(self.run_id)
            existing = run.data.params
            # a restarted worker logs the same params again; MLflow rejects re-logging, so skip them
            new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
            self._replica_max = float(run.data.tags.get(REPLICA_TAG, 0.0))  # a restart keeps the run's maximum
            if new:
                self.client.log_batch(self.run_id, params=new)

    def set_tag(self, key: str, value: str) -> None:
        if self.enabled:
            self.client.set_tag(self.run_id, key, value)

    def add(self, step: int, /, **metrics: float) -> None:
        """Buffer ``metrics`` (flat names) at ``step``: curves under their MLflow keys; ``step``
        and ``replica_max_diff`` as tags; ``trainable_params`` not at all (a param already)."""
        if self.enabled:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            curves, tags = split_constants(metrics)
            self._pending += [Metric(k, float(v), now, step) for k, v in curves.items()]
            if STEP_TAG in tags:
                self._tags[STEP_TAG] = str(int(tags[STEP_TAG]))
            if REPLICA_TAG in tags:
                self._replica_max = _worse(self._replica_max, float(tags[REPLICA_TAG]))
                self._tags[REPLICA_TAG] = repr(self._replica_max)

    def flush(self) -> None:
        if self.enabled and (self._pending or self._tags):
            from mlflow.entities import RunTag

            # one call: MlflowClient.log_batch splits what exceeds the server's per-request limits
            self.client.log_batch(self.run_id, metrics=self._pending,
                                  tags=[RunTag(k, v) for k, v in self._tags.items()])
            self._pending, self._tags = [], {}

    def progress(self, step: int, total: int, force: bool = False) -> None:
        """Every ``knobs.progress_interval()`` s (or when ``force``): flush, then tag the run with where it is."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._mark is None and not force:  # the first step: the clock starts here (set-up is not training)
            self._mark = (step, now)
            return
        if not force and now - self._mark[1] < self._interval:
            return
        self.flush()
        if self._mark is not None and step > self._mark[0]:
            rate = (step - self._mark[0]) / max(now - self._mark[1], 1e-9)
            self.set_tag(PROGRESS_TAG, json.dumps({"step": step, "steps": total, "steps_per_s": round(rate, 4),
                                                   "time": round(time.time(), 1)}))
        self._mark = (step, now)

    def log_adapter(self, adapter_dir: Path, metric: str, value: float, step: int) -> None:
        """The trial's best adapter so far, as ``adapter/`` artifacts (milliseconds); ``raypost
        promote`` builds the registrable pyfunc model from them (0.1-1 s, paid once, not per
        improvement while every rank waits at the report)."""
        if self.enabled:
            from raypost.tracking.registry import log_adapter_artifacts

            log_adapter_artifacts(self.client, self.run_id, adapter_dir, metric, value, step)

    def log_final(self, metrics: dict, artifacts_dir: Path, step: int) -> None:
        """End-of-trial evaluation: metrics plus the tables and plots written to a folder."""
        self.add(step, **metrics)
        self.flush()
        if self.enabled and any(artifacts_dir.iterdir()):
            self.client.log_artifacts(self.run_id, str(artifacts_dir), artifact_path="evaluation")


def _worse(a: float, b: float) -> float:
    """The larger replica difference, where NaN (weights gone NaN on a rank) beats any number:
    ``max(0.0, nan)`` is 0.0, which would record a broken trial as in sync."""
    return b if math.isnan(b) or (not math.isnan(a) and b > a) else a
