"""`raypost sweep im` and `raypost sweep pcp` end to end on the shared local Ray: Optuna proposes,
Ray Train runs each trial under DeepSpeed, MLflow records a parent run with one child per trial.

Tiny config-built models and a handful of steps and examples keep each sweep to about a minute on
two cores. IM runs one trial with full fine-tuning (every weight under the ZeRO-2 optimizer) and
one with LoRA; PCP runs on two workers so stage 1's gradient all-reduce is exercised and the replicas
must agree afterwards.
"""

from __future__ import annotations

import json

import pytest
import yaml

from raypost.cli import main

IM_SPACE = {  # samples 3 here, --samples 2 on the command line: the sweep must count 2 as finished
    "method": "im", "samples": 3, "workers": 1, "scheduler": "fifo",
    "points_to_evaluate": [{"instruction_weight": 1.0, "trainable": "full"},
                           {"instruction_weight": 0.0, "trainable": "lora"}],
    "fixed": {"model": "tiny:gpt2", "max_seq_length": 448, "lr": 3.0e-3, "eval_every": 2, "batch_size": 2,
              "zero_stage": 2, "train_k": "1", "train_per_k": 4, "eval_k": "1", "eval_per_k": 3, "im_eval_max_rows": 3},
    "search": {"instruction_weight": {"type": "float", "low": 0.0, "high": 1.0},
               "trainable": {"type": "categorical", "values": ["full", "lora"]}},
}
PCP_SPACE = {
    "method": "pcp", "samples": 2, "workers": 2, "scheduler": "fifo",
    # the second trial also pseudo-labels the unlabelled texts first (a 2-step first model, its
    # predictions gathered from both ranks) and fills the label words into stage 1's slot
    "points_to_evaluate": [{"mask_prob": 0.15, "cpt_steps": 3, "pseudo_label_steps": 0},
                           {"mask_prob": 0.3, "cpt_steps": 5, "pseudo_label_steps": 2}],
    "fixed": {"model": "tiny:bert", "max_prompt_length": 96, "ft_lr": 3.0e-3, "cpt_lr": 3.0e-3, "eval_every": 2,
              "batch_size": 2, "train_k": "2", "train_per_k": 40, "labelled_per_label": 1, "unlabelled_size": 12,
              "eval_k": "2", "eval_per_k": 4},
    "search": {"mask_prob": {"type": "float", "low": 0.1, "high": 0.3},
               "cpt_steps": {"type": "int", "low": 3, "high": 5},
               "pseudo_label_steps": {"type": "categorical", "values": [0, 2]}},
}


def sweep(method, space, ray_cluster, tmp_path, tracking_uri, *extra):
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(space))
    return main(["sweep", method, "--space", str(path), "--address", ray_cluster, "--tracking-uri", tracking_uri,
                 "--storage", str(tmp_path / "ray"), "--name", f"{method}-e2e", "--samples", "2",
                 "--max-failures", "0", "--set", "steps=4", *extra])


def trial_runs(client, method):
    experiment = client.get_experiment_by_name(f"raypost-{method}")
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`raypost.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    trials = client.search_runs([experiment.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
    assert len(trials) == 2
    return parent[0], trials


def check_common(client, trial, method):
    assert trial.info.status == "FINISHED"
    assert trial.data.params["method"] == method and trial.data.params["world_size"] in ("1", "2")
    accuracy = client.get_metric_history(trial.info.run_id, "eval/accuracy")
    assert [m.step for m in accuracy] == [2, 4] and all(0.0 <= m.value <= 1.0 for m in accuracy)
    assert float(trial.data.tags["raypost.replica_max_diff"]) == 0.0  # at every evaluation (the largest)
    assert "stepgame/acc_k" + ("1" if method == "im" else "2") in trial.data.metrics  # final per-k table
    artifacts = {a.path for a in client.list_artifacts(trial.info.run_id, "evaluation")}
    assert "evaluation/stepgame_results.md" in artifacts
    meta_path = client.download_artifacts(trial.info.run_id, "adapter/raypost_adapter.json")
    with open(meta_path) as f:
        return json.load(f)


def test_sweep_im(ray_cluster, tmp_path, tracking_uri, mlflow_client):
    assert sweep("im", IM_SPACE, ray_cluster, tmp_path, tracking_uri, "--workers", "1") == 0
    _, trials = trial_runs(mlflow_client, "im")
    by_trainable = {t.data.params["trainable"]: t for t in trials}
    assert set(by_trainable) == {"full", "lora"}
    for trainable, trial in by_trainable.items():
        meta = check_common(mlflow_client, trial, "im")
        assert meta["method"] == "im" and meta["trainable"] == trainable and meta["kind"] == "causal"
        assert trial.data.params["im_kind"] == "causal" and trial.data.params["model"] == "tiny:gpt2"
        assert len(mlflow_client.get_metric_history(trial.info.run_id, "eval/output_loss")) == 2
        files = {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(trial.info.run_id, "adapter")}
        assert ("adapter_model.safetensors" if trainable == "lora" else "model.safetensors") in files
    full, lora = by_trainable["full"], by_trainable["lora"]
    assert float(full.data.params["instruction_weight"]) == 1.0 and float(lora.data.params["instruction_weight"]) == 0.0
    assert int(full.data.params["trainable_params"]) > 5 * int(lora.data.params["trainable_params"])
    assert full.data.params["optimizer"] == "DeepSpeedZeroOptimizer"  # full fine-tuning under ZeRO

    from raypost.inference import load_predictor

    predictor = load_predictor(f"runs:/{lora.info.run_id}/adapter", tracking_uri=tracking_uri)
    # the logged adapter is the one its best_eval_accuracy was measured on: the same eval rows
    # (generated from the space's data settings) give the same accuracy through the predictor
    from raypost.stepgame.task import StepgameDataConfig, load_eval_rows

    rows = load_eval_rows(StepgameDataConfig(train_k="1", train_per_k=4, eval_k="1", eval_per_k=3))
    accuracy = sum(p == r["label"] for p, r in zip(predictor.predict(rows), rows)) / len(rows)
    assert accuracy == pytest.approx(lora.data.metrics["eval/best_accuracy"])


def test_sweep_pcp(ray_cluster, tmp_path, tracking_uri, mlflow_client):
    assert sweep("pcp", PCP_SPACE, ray_cluster, tmp_path, tracking_uri, "--workers", "2") == 0
    _, trials = trial_runs(mlflow_client, "pcp")
    assert {t.data.params["cpt_steps"] for t in trials} == {"3", "5"}
    for trial in trials:
        meta = check_common(mlflow_client, trial, "pcp")
        assert meta["method"] == "pcp" and meta["kind"] == "masked_lm" and "full" in meta["weights"]
        params = trial.data.params
        assert params["world_size"] == "2" and params["labelled_examples"] == "9"
        # stage 1 averaged its gradients over both ranks: identical weights before DeepSpeed starts
        assert float(params["cpt_replica_max_diff"]) == 0.0
        cpt = mlflow_client.get_metric_history(trial.info.run_id, "cpt/loss")
        assert [m.step for m in cpt] == list(range(1, int(params["cpt_steps"]) + 1))
        assert float(params["cpt_loss_first"]) == cpt[0].value and float(params["cpt_loss_last"]) == cpt[-1].value
        assert {"mask_prob", "cpt_lr", "ft_lr", "template", "verbalizer_words"} <= set(params)
        pseudo = mlflow_client.get_metric_history(trial.info.run_id, "cpt/pseudo_label_loss")
        if params["pseudo_label_steps"] == "2":  # both ranks got the same labels: stage 1 stayed in sync
            assert [m.step for m in pseudo] == [1, 2] and 0.0 <= float(params["pseudo_label_accuracy"]) <= 1.0
            assert sum(int(c.split(":")[1]) for c in params["pseudo_label_counts"].split(",")) == 12
        else:
            assert pseudo == [] and "pseudo_label_accuracy" not in params
        files = {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(trial.info.run_id, "adapter")}
        assert {"model.safetensors", "config.json", "raypost_adapter.json"} <= files


FINETUNE_SPACE = {
    "method": "finetune", "samples": 2, "workers": 2, "scheduler": "fifo",
    "points_to_evaluate": [{"ft_lr": 3.0e-3}, {"ft_lr": 1.0e-3}],
    "fixed": {"model": "tiny:bert", "max_input_length": 224, "eval_every": 2, "batch_size": 2, "zero_stage": 3,
              "zero3_persistence_threshold": 0,
              "train_k": "2", "train_per_k": 8, "eval_k": "2", "eval_per_k": 4},
    "search": {"ft_lr": {"type": "categorical", "values": [3.0e-3, 1.0e-3]}},
}


def test_sweep_finetune(ray_cluster, tmp_path, tracking_uri, mlflow_client):
    """The full fine-tuning reference through the same sweep: every weight, ZeRO-3 over 2 workers
    (weights partitioned, even the tiny model's: the loop evaluates in lockstep and gathers to save)."""
    assert sweep("finetune", FINETUNE_SPACE, ray_cluster, tmp_path, tracking_uri, "--workers", "2") == 0
    _, trials = trial_runs(mlflow_client, "finetune")
    assert {t.data.params["ft_lr"] for t in trials} == {"0.003", "0.001"}
    for trial in trials:
        meta = check_common(mlflow_client, trial, "finetune")
        assert meta["method"] == "finetune" and meta["kind"] == "classifier"
        assert trial.data.params["optimizer"] == "DeepSpeedZeroOptimizer_Stage3" and trial.data.params["world_size"] == "2"
        assert 0 <= float(trial.data.metrics["eval/accuracy"]) <= 1 and trial.data.metrics["stepgame/acc"] == \
            trial.data.metrics["eval/accuracy"]  # rank 0's final evaluation reused what both ranks evaluated
        assert int(trial.data.params["trainable_params"]) == meta["trainable_params"] > 40_000  # the whole tiny BERT
        files = {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(trial.info.run_id, "adapter")}
        assert {"model.safetensors", "config.json", "raypost_adapter.json"} <= files
