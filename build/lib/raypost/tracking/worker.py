"""Metric logging from inside a training worker (rank 0 only).

Metrics are buffered and sent with one ``log_batch`` per evaluation interval, so the hot
loop never waits on the tracking server.
"""

from __future__ import annotations

import time
from pathlib import Path


class WorkerLogger:
    def __init__(self, run_id: str | None, tracking_uri: str | None, enabled: bool):
        self.enabled = bool(enabled and run_id)
        self.run_id = run_id
        self._pending: list = []
        if self.enabled:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def log_params(self, params: dict) -> None:
        if self.enabled:
            from mlflow.entities import Param

            existing = self.client.get_run(self.run_id).data.params
            # a restarted worker logs the same params again; MLflow rejects re-logging, so skip them
            new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
            if new:
                self.client.log_batch(self.run_id, params=new)

    def set_tag(self, key: str, value: str) -> None:
        if self.enabled:
            self.client.set_tag(self.run_id, key, value)

    def add(self, step: int, /, **metrics: float) -> None:
        if self.enabled:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        if self.enabled and self._pending:
            for i in range(0, len(self._pending), 1000):  # MLflow's per-call limit
                self.client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
            self._pending = []

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
