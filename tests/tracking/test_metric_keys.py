"""Metric names in MLflow: grouped by prefix (the UI's chart sections), constants as tags and
params, and read back under raypost's flat names from new and old stores alike."""

from __future__ import annotations

import pytest

from raypost.tracking.metric_keys import (
    REPLICA_TAG,
    STEP_TAG,
    flat_name,
    mlflow_key,
    objective_value,
    run_metrics,
)
from raypost.tracking.worker import WorkerLogger

KEYS = {  # flat name -> MLflow key
    "eval_accuracy": "eval/accuracy", "eval_output_loss": "eval/output_loss", "best_eval_accuracy": "eval/best_accuracy",
    "best_eval_output_loss": "eval/best_output_loss", "train_loss": "train/loss",
    "train_output_loss": "train/output_loss", "lr_prompt": "train/lr_prompt", "lr_lora": "train/lr_lora",
    "stepgame_acc": "stepgame/acc", "stepgame_noisy_acc_k3": "stepgame/noisy_acc_k3", "cpt_loss": "cpt/loss",
    "pseudo_label_loss": "cpt/pseudo_label_loss", "tokens_per_s": "system/tokens_per_s",
    "train_s": "system/train_s", "cpu_s": "system/cpu_s", "peak_memory_mb": "system/peak_memory_mb",
    "resumed_from_step": "system/resumed_from_step",
    # a recipe's own metric outside every section, and its best, keep their names
    "toy_score": "toy_score", "best_toy_score": "best_toy_score",
}


@pytest.mark.parametrize("name, key", KEYS.items())
def test_keys_and_their_inverse(name, key):
    assert mlflow_key(name) == key
    assert flat_name(key) == name
    assert flat_name(name) == name  # an old store's flat key reads as itself


def test_every_curve_the_loop_logs_is_in_a_section():
    from raypost.recipes.base import LOOP_METRICS

    curves = [m for m in LOOP_METRICS if m not in ("replica_max_diff", "trainable_params")]
    assert all("/" in mlflow_key(m) for m in curves), {m: mlflow_key(m) for m in curves}


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _run(client):
    exp = client.get_experiment_by_name("keys")
    return client.create_run(exp.experiment_id if exp else client.create_experiment("keys")).info.run_id


def test_worker_logs_curves_by_section_and_constants_once(client):
    run_id = _run(client)
    log = WorkerLogger(run_id, client.tracking_uri, enabled=True)
    log.log_params({"trainable_params": 1234, "steps": 4})
    for step, diff in ((1, 0.0), (2, 3e-7), (3, 0.0)):
        log.add(step, train_loss=2.0 - step / 10, lr_prompt=0.01 * step)
        log.add(step, step=step, eval_accuracy=0.1 * step, replica_max_diff=diff, trainable_params=1234,
                tokens_per_s=100.0 + step)
        log.flush()
    run = client.get_run(run_id)
    assert set(run.data.metrics) == {"train/loss", "train/lr_prompt", "eval/accuracy", "system/tokens_per_s"}
    assert [m.step for m in client.get_metric_history(run_id, "eval/accuracy")] == [1, 2, 3]
    # constants: the steps completed and the largest replica difference as tags, the count a param
    assert run.data.tags[STEP_TAG] == "3" and float(run.data.tags[REPLICA_TAG]) == 3e-7
    assert run.data.params["trainable_params"] == "1234"
    flat = run_metrics(run)
    assert flat["step"] == 3 and flat["replica_max_diff"] == 3e-7 and flat["trainable_params"] == 1234
    assert flat["eval_accuracy"] == pytest.approx(0.3) and flat["train_loss"] == pytest.approx(1.7)

    # a restarted worker keeps the run's maximum, not its own
    again = WorkerLogger(run_id, client.tracking_uri, enabled=True)
    again.log_params({"trainable_params": 1234})
    again.add(4, step=4, replica_max_diff=1e-8)
    again.flush()
    tags = client.get_run(run_id).data.tags
    assert tags[STEP_TAG] == "4" and float(tags[REPLICA_TAG]) == 3e-7


def test_old_flat_runs_read_the_same(client):
    """A run logged before grouping (flat keys, step and replica_max_diff as curves) reads back
    with the same flat names and values as one logged now."""
    old, new = _run(client), _run(client)
    for step in (2, 4):
        client.log_metric(old, "eval_accuracy", 0.1 * step, step=step)
        client.log_metric(old, "step", step, step=step)
        client.log_metric(old, "replica_max_diff", 0.0, step=step)
        client.log_metric(old, "best_eval_accuracy", 0.4, step=step)
    client.log_metric(old, "trainable_params", 99, step=4)
    log = WorkerLogger(new, client.tracking_uri, enabled=True)
    log.log_params({"trainable_params": 99})
    for step in (2, 4):
        log.add(step, step=step, eval_accuracy=0.1 * step, replica_max_diff=0.0, best_eval_accuracy=0.4)
    log.flush()
    a, b = run_metrics(client.get_run(old)), run_metrics(client.get_run(new))
    assert a == pytest.approx(b) and a["step"] == 4 and a["trainable_params"] == 99
    for metric in ("eval_accuracy", "eval/accuracy"):  # ranked by the best value, either spelling
        assert objective_value(client.get_run(old), metric) == objective_value(client.get_run(new), metric) == 0.4


def test_a_nan_replica_difference_is_kept_not_read_as_in_sync(client):
    """max(0.0, nan) is 0.0 in Python: a rank whose weights went NaN must not read as in sync,
    in this worker or in one restarted after it."""
    import math

    run_id = _run(client)
    log = WorkerLogger(run_id, client.tracking_uri, enabled=True)
    log.log_params({})
    for step, diff in ((1, 0.0), (2, float("nan")), (3, 0.0)):
        log.add(step, step=step, replica_max_diff=diff)
    log.flush()
    assert math.isnan(float(client.get_run(run_id).data.tags[REPLICA_TAG]))
    again = WorkerLogger(run_id, client.tracking_uri, enabled=True)
    again.log_params({})
    again.add(4, step=4, replica_max_diff=1e-3)
    again.flush()
    assert math.isnan(run_metrics(client.get_run(run_id))["replica_max_diff"])


def test_a_run_with_old_and_new_keys_reads_the_new_ones(client):
    """A trial resumed across the change has both spellings; the grouped (newer) value wins."""
    run_id = _run(client)
    client.log_metric(run_id, "eval/accuracy", 0.6, step=20)
    client.log_metric(run_id, "eval_accuracy", 0.9, step=10)
    assert run_metrics(client.get_run(run_id))["eval_accuracy"] == 0.6
