"""A worker killed mid-trial is restarted from its checkpoint; an interrupted sweep resumes
with the same trials and MLflow runs, none duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from raypost.train.launch import Scaling
from raypost.tune.space import validate_space
from raypost.tune.sweep import SweepOptions, run_sweep


def test_killed_worker_restarts_from_checkpoint(ray_cluster, tmp_path, tracking_uri, mlflow_client):
    marker = tmp_path / "crashed"
    space = validate_space({
        "method": "raypost.recipes.synthetic", "samples": 1, "scheduler": "fifo",
        "fixed": {"steps": 30, "eval_every": 10, "batch_size": 16, "lr": 0.1,
                  "crash_at_step": 15, "crash_marker": str(marker)}}, "raypost.recipes.synthetic")
    opts = SweepOptions(name="crash", storage=str(tmp_path / "ray"), tracking_uri=tracking_uri,
                        scaling=Scaling(workers=2), samples=1, scheduler="fifo", max_failures=2)
    results, _ = run_sweep(space, opts)

    assert marker.exists(), "rank 1 never crashed: the test did not test anything"
    assert not results[0].error
    (trial,) = [r for r in mlflow_client.search_runs([mlflow_client.get_experiment_by_name(
        "raypost-raypost.recipes.synthetic").experiment_id]) if r.data.tags["raypost.role"] == "trial"]
    assert trial.info.status == "FINISHED"
    resumed = mlflow_client.get_metric_history(trial.info.run_id, "system/resumed_from_step")
    assert [m.value for m in resumed] == [10.0]  # restarted from the step-10 checkpoint, not from 0
    evals = mlflow_client.get_metric_history(trial.info.run_id, "eval/accuracy")
    assert [m.step for m in evals] == [10, 20, 30]
    assert results[0].metrics["step"] == 30


def _sweep_cmd(space, tmp_path, tracking_uri, address, *extra):
    return [sys.executable, "-m", "raypost.cli", "sweep", "raypost.recipes.synthetic", "--space", str(space),
            "--name", "resumable", "--storage", str(tmp_path / "ray"), "--tracking-uri", tracking_uri,
            "--address", address, "--workers", "1", "--max-failures", "0", *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_sweep_resumes_without_duplicates(sig, ray_cluster, tmp_path, tracking_uri, mlflow_client):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM mid-sweep: exit 130, the parent run KILLED, a
    trial the signal cut short marked interrupted (not early-stopped); ``--resume`` finishes the
    same trials and runs, none duplicated. Also the multi-objective option: accuracy up, trainable
    parameters down (a Pareto front)."""
    space = tmp_path / "space.yaml"
    space.write_text("""\
method: raypost.recipes.synthetic
samples: 3
objectives: {eval_accuracy: max, trainable_params: min}
fixed: {steps: 20, eval_every: 10, batch_size: 16}
search:
  lr: {type: float, low: 0.01, high: 0.2, log: true}
  delta_rank: {type: int, low: 1, high: 8}
""")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(_sweep_cmd(space, tmp_path, tracking_uri, ray_cluster), stdout=log,
                             stderr=subprocess.STDOUT, env=env)

    def finished_trials():
        try:
            exp = mlflow_client.get_experiment_by_name("raypost-raypost.recipes.synthetic")
            runs = mlflow_client.search_runs([exp.experiment_id]) if exp else []
        except Exception:  # the store is being created by the subprocess
            return []
        return [r for r in runs if r.data.tags.get("raypost.role") == "trial" and r.info.status == "FINISHED"]

    deadline = time.monotonic() + 900  # a wait, not a speed check: a loaded CI box can be slow
    while not finished_trials() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(2)
    assert finished_trials(), (tmp_path / "first.log").read_text()[-3000:]
    first.send_signal(sig)  # Tune saves its state and stops
    assert first.wait(timeout=180) == 130, (tmp_path / "first.log").read_text()[-3000:]
    said = [line for line in (tmp_path / "first.log").read_text().splitlines() if line.startswith("raypost: ")]
    # one line of its own (Ray's forwarded worker logs may still trail it in the shared log)
    assert len(said) == 2 and said[0].startswith(f"raypost: {sig.name}: stopping the sweep"), said
    assert said[1].startswith(f"raypost: {sig.name}: sweep interrupted with ") and "--resume" in said[1], said
    done_before = {r.info.run_id for r in finished_trials()}
    assert 1 <= len(done_before) < 3
    exp = mlflow_client.get_experiment_by_name("raypost-raypost.recipes.synthetic")
    before = mlflow_client.search_runs([exp.experiment_id])
    (parent,) = [r for r in before if r.data.tags["raypost.role"] == "sweep"]
    assert parent.info.status == "KILLED"
    for t in before:
        assert t.info.status != "RUNNING"  # nothing left open
        if t.data.tags.get("raypost.interrupted") == "true":  # cut short by the signal, not by the scheduler
            assert t.info.status == "KILLED" and "raypost.stopped_early" not in t.data.tags

    resumed = subprocess.run(_sweep_cmd(space, tmp_path, tracking_uri, ray_cluster, "--resume"),
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    exp = mlflow_client.get_experiment_by_name("raypost-raypost.recipes.synthetic")
    runs = mlflow_client.search_runs([exp.experiment_id])
    sweeps = [r for r in runs if r.data.tags["raypost.role"] == "sweep"]
    trials = [r for r in runs if r.data.tags["raypost.role"] == "trial"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert len(trials) == 3 and len({t.data.tags["raypost.trial_id"] for t in trials}) == 3
    assert all(t.info.status == "FINISHED" and "raypost.interrupted" not in t.data.tags for t in trials)
    assert done_before <= {t.info.run_id for t in trials}  # finished trials were kept, not redone
    parent_files = {a.path for a in mlflow_client.list_artifacts(sweeps[0].info.run_id, "optuna")}
    assert "optuna/pareto_front.png" in parent_files
    local = mlflow_client.download_artifacts(sweeps[0].info.run_id, "optuna/trials.json", str(tmp_path))
    study = json.loads(open(local).read())
    complete = [t for t in study if t["state"] == "COMPLETE"]
    assert len(complete) == 3 and all(len(t["values"]) == 2 for t in complete)
    for t in complete:  # the second objective is the exact adapter size of that trial
        assert t["values"][1] == 2 * 16 * t["params"]["delta_rank"]
    for t in trials:
        if t.info.run_id in done_before:  # not trained again: one eval per 10 steps, no more
            assert [m.step for m in mlflow_client.get_metric_history(t.info.run_id, "eval/accuracy")] == [10, 20]
