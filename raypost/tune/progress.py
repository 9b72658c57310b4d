"""What a sweep prints while it runs (the default console; ``-q``: nothing until the summary,
``--verbose``: Ray's and Tune's own output instead).

A Ray Tune ``Callback`` on the driver: a line when a trial starts, finishes or fails, and every
``every_s`` seconds a status block: trials done / running / to go, the best so far, and for each
running trial its step / total, steps/s, the latest evaluation and an ETA. Steps and speed come
from the ``raypost.progress`` tag each trial's rank 0 writes to MLflow (raypost/tracking/worker.py):
the tracking store is where the figures already are, so the console needs no channel of its own.

Trials are named by what was searched (``dept lr_prompt=0.0065 lr_head=0.0052 [edc95e31]``); the
same label is the trial's MLflow run name, so the console, the runs table and Tune's folders
(the id in brackets) point at the same trial.
"""

from __future__ import annotations

import json
import sys
import time

from ray.tune import Callback

from raypost import knobs
from raypost.tracking import runs
from raypost.tracking.metric_keys import run_metrics
from raypost.tracking.worker import PROGRESS_TAG


def fmt(value) -> str:
    """Integers as integers (80, not 80.0), other numbers to 2-4 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.2g}" if abs(value) < 0.01 else f"{value:.4g}"
    return str(value)


def trial_label(method: str, config: dict, searched: list[str], trial_id: str) -> str:
    """``dept lr_prompt=0.0065 lr_head=0.0052 [edc95e31]``: the method, the searched values, the id."""
    values = " ".join(f"{k}={fmt(config[k])}" for k in searched if k in config)
    return " ".join(part for part in (method, values, f"[{trial_id}]") if part)


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ConsoleProgress(Callback):
    """Tune pickles its callbacks with the experiment state, and ``--resume`` restores them: so
    this holds the tracking URI, not a client, and reads the console mode when it prints."""

    def __init__(self, tracking_uri: str, parent_run_id: str, method: str, searched: list[str], samples: int,
                 metric: str, mode: str, every_s: float | None = None):
        self.tracking_uri, self.parent_run_id = tracking_uri, parent_run_id
        self.method, self.searched, self.samples = method, searched, samples
        self.metric, self.mode = metric, mode
        self.every_s = knobs.progress_interval() if every_s is None else every_s
        self._last = self._start = time.monotonic()
        self._client = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def label(self, trial) -> str:
        return trial_label(self.method, trial.config, self.searched, trial.trial_id)

    def say(self, text: str) -> None:
        if knobs.console() == "progress":
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.say(f"started  {self.label(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        value = (trial.last_result or {}).get(self.metric)
        best = self._best(trials)
        self.say(f"finished {self.label(trial)}: {self.metric} {fmt(value)}"
                 + (f" (best so far {fmt(best[1])})" if best else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        where = getattr(trial, "path", None) or getattr(trial, "local_path", "")
        self.say(f"FAILED   {self.label(trial)} (error file under {where})")

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        try:
            self.say(self.status(trials))
        except Exception as exc:  # the console must never stop a sweep (a slow or restarting store)
            self.say(f"(progress unavailable: {type(exc).__name__})")

    def _best(self, trials):
        scored = [(t, t.metric_analysis.get(self.metric, {}).get(self.mode)) for t in trials]
        scored = [(t, v) for t, v in scored if v is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda tv: tv[1])

    def status(self, trials) -> str:
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        running = [t for t in trials if t.status == "RUNNING"]
        to_go = max(self.samples - done - len(running), 0)
        head = (f"{done} done, {len(running)} running, {to_go} to go of {self.samples}"
                f" | {duration(time.monotonic() - self._start)} elapsed")
        best = self._best(trials)
        if best:
            head += f" | best {self.metric} {fmt(best[1])}: {self.label(best[0])}"
        lines = [head]
        by_trial = {r.data.tags.get(runs.TRIAL_TAG): r for r in runs.trial_runs(self.client, self.parent_run_id)}
        for trial in running:
            run = by_trial.get(trial.trial_id)
            lines.append("    " + self.label(trial) + "  " + (trial_line(run, self.metric) if run else "starting"))
        return "\n".join(lines)


def trial_line(run, metric: str) -> str:
    """``step 120/300  1.92 steps/s  ETA 1m34s  eval_accuracy 0.361`` from a trial's MLflow run."""
    raw = run.data.tags.get(PROGRESS_TAG)
    if not raw:
        return "setting up"
    p = json.loads(raw)
    left = (p["steps"] - p["step"]) / p["steps_per_s"] - (time.time() - p["time"]) if p["steps_per_s"] else None
    parts = [f"step {p['step']}/{p['steps']}", f"{p['steps_per_s']:.3g} steps/s"]
    if left is not None:
        parts.append(f"ETA {duration(left)}")
    latest = run_metrics(run).get(metric)
    if latest is not None:
        parts.append(f"{metric} {fmt(latest)}")
    return "  ".join(parts)
