"""A fourth method added from outside raypost (``tests/fixtures/toypost``: one methods folder and
one recipe, registered by module path) runs through the real CLI, Ray Tune, Ray Train, DeepSpeed
and MLflow with no edit to ``cli.py``, ``tune/`` or ``train/``. Its scripted evaluation also proves
that the space's objective alone decides which adapter a trial logs and ``promote`` registers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RAYPOST = [sys.executable, "-m", "raypost.cli"]
METHOD = "toypost.recipes.toy"


def run(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
           "RAY_DEDUP_LOGS": "0"}
    return subprocess.run(RAYPOST + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_method_from_outside_is_validated_before_ray_starts(tmp_path):
    out = run(["train", METHOD, "--set", "toy_width=65"], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "raypost: error: <defaults> with --set toy_width=65: toy_width=65 is above what the toy supports (64)")
    assert not (tmp_path / "ray_results").exists()  # refused before Ray or a store was touched
    help_out = run(["train", METHOD, "--help-config"], tmp_path)
    assert help_out.returncode == 0 and "toy_width" in help_out.stdout and "lr_schedule" in help_out.stdout
    bad = run(["sweep", "toypost.recipes.nope"], tmp_path)
    assert bad.returncode == 2 and "cannot be imported" in bad.stderr


@pytest.mark.timeout(900)
def test_the_objective_decides_the_logged_and_promoted_adapter(tmp_path):
    """eval_accuracy peaks at the 2nd evaluation (step 4), eval_loss is lowest at the 4th (step 8):
    with ``objectives: {eval_loss: min}`` the adapter logged and promoted is step 8's."""
    from mlflow.tracking import MlflowClient

    space = {"method": METHOD, "samples": 1, "workers": 1, "scheduler": "fifo",
             "objectives": {"eval_loss": "min"},
             "fixed": {"steps": 10, "eval_every": 2, "batch_size": 4, "zero_stage": 0, "toy_width": 8}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run(["sweep", METHOD, "--space", "toy.yaml", "--name", "toy-loss", "--tracking-uri", uri,
               "--storage", str(tmp_path / "ray")], tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`raypost.role` = 'trial'")
    (trial,) = runs
    losses = {m.step: m.value for m in client.get_metric_history(trial.info.run_id, "eval/loss")}
    accuracy = {m.step: m.value for m in client.get_metric_history(trial.info.run_id, "eval/accuracy")}
    assert max(accuracy, key=accuracy.get) == 4 and min(losses, key=losses.get) == 8  # the two disagree
    assert trial.data.tags["raypost.adapter_step"] == "8"
    assert trial.data.metrics["eval/best_loss"] == 0.0 and "eval/best_accuracy" not in trial.data.metrics
    local = client.download_artifacts(trial.info.run_id, "adapter", str(tmp_path / "dl"))
    assert json.loads((Path(local) / "raypost_adapter.json").read_text())["evaluation"] == 4  # step 8's files

    promoted = run(["promote", "toy-loss", "--name", "toy", "--tracking-uri", uri], tmp_path)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    version = client.get_model_version_by_alias("toy", "champion")
    assert version.tags["metric"] == "eval_loss" and float(version.tags["metric_value"]) == 0.0
    assert version.run_id == trial.info.run_id
