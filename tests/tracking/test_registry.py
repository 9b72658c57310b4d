"""After a small DePT sweep: MLflow holds parent + child runs with params, metric histories and
artifacts; promote registers the best trial and moves `champion`; the registered adapter loads
back (raypost API, `raypost predict`, and plain `mlflow.pyfunc`) and predicts exactly as the
trained adapter does."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from raypost.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "stepgame"

SPACE = """\
method: dept
samples: 2
workers: 2
scheduler: fifo
points_to_evaluate: [{lr_head: 0.05}, {lr_head: 0.0005}]
fixed:
  model: tiny:bert
  steps: 6
  eval_every: 3
  batch_size: 8
  prompt_length: 4
  lowrank_rank: 2
  max_input_length: 160
  train_k: "1-2"
  train_per_k: 40
  eval_k: "1-2"
  eval_per_k: 16
search:
  lr_head: {type: float, low: 0.0001, high: 0.1, log: true}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, ray_cluster):
    """One DePT sweep shared by the tests of this module (two trials, two workers each)."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    space = tmp / "dept.yaml"
    space.write_text(SPACE)
    code = main(["sweep", "dept", "--space", str(space), "--name", "reg", "--address", ray_cluster,
                 "--tracking-uri", uri, "--storage", str(tmp / "ray"), "--max-failures", "0"])
    assert code == 0
    return tmp, uri


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def test_sweep_records_params_metrics_artifacts(sweep):
    _, uri = sweep
    client = _client(uri)
    exp = client.get_experiment_by_name("raypost-dept")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags["raypost.role"] == "sweep"]
    trials = [r for r in runs if r.data.tags["raypost.role"] == "trial"]
    assert len(trials) == 2 and all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id for t in trials)
    assert parent.data.tags["raypost.version"] and parent.data.tags["torch.version"]
    for t in trials:
        p = t.data.params
        assert p["method"] == "dept" and p["model"] == "tiny:bert" and p["world_size"] == "2"
        assert p["zero_stage"] == "1" and p["precision"] == "fp32"
        d, s, m, r = 32, 160, 4, 2
        assert int(p["dept_trainable_params"]) == m * d + r * (s + d)  # exact DePT budget
        assert int(p["trainable_params"]) == m * d + r * (s + d) + int(p["dept_head_params"])
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "eval/accuracy")]
        assert steps == [3, 6]
        assert [m.step for m in client.get_metric_history(t.info.run_id, "train/loss")] == list(range(1, 7))
        for name in ("train/lr_prompt", "train/lr_lowrank", "train/lr_head", "system/tokens_per_s",
                     "system/peak_memory_mb"):
            assert client.get_metric_history(t.info.run_id, name), name
        files = {a.path for a in client.list_artifacts(t.info.run_id, "adapter")}
        assert {"adapter/adapter.safetensors", "adapter/adapter_config.json", "adapter/raypost_adapter.json"} <= files
        # trials log plain adapter files (and the step they are from); the pyfunc model waits for promote
        assert int(t.data.tags["raypost.adapter_step"]) in (3, 6) and "raypost.model_uri" not in t.data.tags
        # final StepGame evaluation: accuracy per k and the tables/plot
        assert {"stepgame/acc", "stepgame/acc_k1", "stepgame/acc_k2"} <= set(t.data.metrics)
        assert 0.0 <= t.data.metrics["stepgame/acc_k1"] <= 1.0
        assert client.list_artifacts(t.info.run_id, "evaluation")


def test_sweep_opens_in_the_ui_on_its_trials_with_their_columns(sweep):
    """The sweep's shared view (an experiment tag MLflow's UI opens by key) and the link
    `raypost ui` prints for it; tests/tracking/test_ui.py renders it in Chromium."""
    from raypost.tracking.cli import experiment_links

    tmp, uri = sweep
    exp = _client(uri).get_experiment_by_name("raypost-dept")
    saved = json.loads(exp.tags["mlflow.sharedViewState.reg"])  # MLflow's saved-view envelope: in its Views menu
    assert saved["name"] == "sweep reg" and saved["updatedAt"] >= saved["createdAt"] > 0
    view = json.loads(saved["state"])
    assert view["searchFilter"] == "tags.`raypost.sweep` = 'reg' and tags.`raypost.role` = 'trial'"
    assert view["orderByKey"] == "metrics.`eval/best_accuracy`" and view["orderByAsc"] is False
    assert view["selectedColumns"][:3] == ["params.`lr_head`", "metrics.`eval/best_accuracy`", "metrics.`eval/accuracy`"]
    # rewritten at the sweep's end with the chart sections its trials logged, eval and train first
    assert [section["name"] for section in view["compareRunSections"]] == ["eval", "train", "stepgame"]
    trial = next(r for r in _client(uri).search_runs([exp.experiment_id]) if r.data.tags["raypost.role"] == "trial")
    for column in view["selectedColumns"][:3]:  # each names something the trials really have
        kind, key = column.split(".", 1)
        assert key.strip("`") in getattr(trial.data, kind), column
    links = experiment_links(uri, 5000)
    assert links[0] == f"  raypost-dept: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    assert links[1] == f"    sweep reg: {links[0].split(': ', 1)[1]}&viewStateShareKey=reg"


def test_promote_load_predict_roundtrip(sweep, capsys):
    import mlflow
    import pandas as pd

    from raypost.inference import load_predictor
    from raypost.stepgame import read_rows

    tmp, uri = sweep
    client = _client(uri)
    trials = [r for r in client.search_runs([client.get_experiment_by_name("raypost-dept").experiment_id])
              if r.data.tags["raypost.role"] == "trial"]
    best = max(trials, key=lambda r: r.data.metrics["eval/best_accuracy"])
    assert main(["promote", "reg", "--name", "stepgame-dept", "--tracking-uri", uri]) == 0
    first = client.get_model_version_by_alias("stepgame-dept", "champion")
    # promote built the pyfunc model from the run's adapter/ files, and left the run as it was
    promoted = client.get_run(best.info.run_id)
    assert promoted.data.tags["raypost.model_uri"] == first.source
    assert promoted.data.tags["raypost.model_adapter_step"] == best.data.tags["raypost.adapter_step"]
    assert (promoted.info.status, promoted.info.end_time) == (best.info.status, best.info.end_time)
    assert first.run_id == best.info.run_id or first.tags["run_id"] == best.info.run_id
    assert first.tags["metric"] == "eval_accuracy" and first.tags["base_model"] == "tiny:bert"
    assert float(first.tags["metric_value"]) == best.data.metrics["eval/best_accuracy"]
    assert first.description.startswith(f"dept adapter on tiny:bert: best eval_accuracy "
                                        f"{best.data.metrics['eval/best_accuracy']:.4g} at step ")

    rows = read_rows(SHARED / "clean" / "qa1_valid.json", limit=40)
    from_registry = load_predictor("models:/stepgame-dept@champion", tracking_uri=uri).predict(rows)
    # the trained adapter as the trial's checkpoint holds it (the model as trained, not via MLflow)
    ckpts = sorted((tmp / "ray" / "reg-train").glob(f"*{best.data.tags['raypost.trial_id']}*/checkpoint_*/adapter"))
    assert ckpts
    local = [load_predictor(c).predict(rows) for c in ckpts]
    assert from_registry in local
    mlflow.set_tracking_uri(uri)
    # models from code: the model folder carries the model's source file and no pickle at all
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/stepgame-dept@champion",
                                                         dst_path=str(tmp / "model")))
    stored = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    assert not [p for p in stored if p.endswith((".pkl", ".pickle", ".cloudpickle"))], stored
    assert "pyfunc_model.py" in {Path(p).name for p in stored}, stored
    pyfunc = mlflow.pyfunc.load_model("models:/stepgame-dept@champion")
    assert list(pyfunc.predict(pd.DataFrame(rows))) == from_registry  # the extra `label` column is ignored
    assert pyfunc.metadata.signature.inputs.input_names() == ["story", "question"]
    leftovers = set(Path(tempfile.gettempdir()).glob("raypost-adapter-*"))

    inp = tmp / "rows.jsonl"
    inp.write_text("".join(json.dumps({"story": r["story"], "question": r["question"], "label": r["label"]}) + "\n"
                           for r in rows))
    out = tmp / "pred.jsonl"
    capsys.readouterr()
    assert main(["predict", "models:/stepgame-dept@champion", "--input", str(inp), "--output", str(out),
                 "--tracking-uri", uri]) == 0
    preds = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    assert preds == from_registry
    assert set(Path(tempfile.gettempdir()).glob("raypost-adapter-*")) == leftovers  # the download was removed
    acc = sum(p == r["label"] for p, r in zip(preds, rows)) / len(rows)
    assert f"accuracy {acc:.4f} on 40 labelled rows" in capsys.readouterr().err

    # promoting again (the metric by its MLflow key this time): a new version, alias moved, the
    # first version kept
    assert main(["promote", "reg", "--name", "stepgame-dept", "--metric", "eval/accuracy", "--tracking-uri", uri]) == 0
    second = client.get_model_version_by_alias("stepgame-dept", "champion")
    assert second.tags["metric"] == "eval_accuracy" and second.tags["run_id"] == first.tags["run_id"]
    assert int(second.version) == int(first.version) + 1
    assert second.source == first.source  # the same adapter: its model is reused, not logged again
    assert client.get_model_version("stepgame-dept", first.version).status == "READY"


def test_promote_bad_inputs(sweep, capsys):
    _, uri = sweep
    capsys.readouterr()
    assert main(["promote", "no-such-sweep", "--name", "x", "--tracking-uri", uri]) == 3
    assert "no sweep or run named 'no-such-sweep'" in capsys.readouterr().err
    assert main(["promote", "reg", "--name", "x", "--metric", "bleu", "--tracking-uri", uri]) == 3
    assert "metric 'bleu' was not logged" in capsys.readouterr().err
    assert main(["promote", "reg", "--name", "x", "--tracking-uri", "http://127.0.0.1:9"]) == 3
    assert "unreachable" in capsys.readouterr().err
