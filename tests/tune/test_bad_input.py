"""Every bad input of `raypost sweep` / `raypost train`: one line naming the problem, exit code,
and nothing started (no Ray, no MLflow run) before the check."""

from __future__ import annotations

import time

import pytest

from raypost.cli import main

GOOD = """\
method: raypost.recipes.synthetic
samples: 2
fixed: {steps: 10, eval_every: 5}
search:
  lr: {type: float, low: 0.01, high: 0.1, log: true}
"""


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("text, expected", [
    ("method: dept\nfixed: {steps: [unclosed\n", "malformed YAML at line 3"),
    (GOOD.replace("samples: 2", "sample: 2"), "unknown key 'sample'"),
    (GOOD.replace("lr: {", "learning_rate: {"), "unknown config key search.learning_rate"),
    (GOOD.replace("steps: 10", "stepz: 10"), "unknown config key fixed.stepz"),
    (GOOD.replace("low: 0.01, high: 0.1", "low: 0.1, high: 0.01"), "search.lr: low=0.1 is greater than high=0.01"),
    (GOOD.replace("{type: float, low: 0.01, high: 0.1, log: true}", "{type: categorical, values: []}"),
     "search.lr: categorical needs a non-empty list of values"),
    (GOOD.replace("type: float", "type: normal"), "search.lr needs a type"),
    (GOOD.replace("samples: 2", "samples: 0"), "samples=0 must be a whole number >= 1"),
    (GOOD.replace("fixed: {steps: 10, eval_every: 5}", "fixed: {steps: 0}"), "steps=0 is below its minimum 1"),
    (GOOD.replace("steps: 10", "steps: 4.5"), "steps=4.5 must be a whole number"),
    (GOOD.replace("steps: 10", "steps: true"), "steps=True must be a whole number"),
    (GOOD.replace("steps: 10", "steps: abc"), "steps='abc' must be a whole number"),
    (GOOD.replace("eval_every: 5", "eval_every: 5, lr_schedule: step"),
     "lr_schedule='step' is not one of constant, linear, cosine"),
    (GOOD.replace("eval_every: 5", "eval_every: 5, warmup_steps: 20"),
     "warmup_steps=20 is longer than steps=10; warm up over at most steps"),
    (GOOD + "objectives: {eval_acc: max}\n", "objective 'eval_acc' is not a metric raypost.recipes.synthetic reports"),
    (GOOD + "points_to_evaluate: [{lr: 5.0}]\n", "points_to_evaluate: lr=5.0 is outside search.lr [0.01, 0.1]"),
    (GOOD.replace("log: true}", "step: -0.01}"), "search.lr: step=-0.01 must be above 0"),
    (GOOD.replace("samples: 2", "samples: four"), "samples='four' must be a whole number >= 1"),
    (GOOD.replace("samples: 2", "samples: 2\nworkers: 0"), "workers=0 must be a whole number >= 1"),
    (GOOD.replace("samples: 2", "samples: 2\ncpus_per_worker: -1"), "cpus_per_worker=-1 must be a number >= 0.01"),
    (GOOD.replace("samples: 2", "samples: 2\nseed: 1.5"), "seed=1.5 must be a whole number >= 0"),
])
def test_bad_space_exits_2_with_one_line(tmp_path, capsys, text, expected, tracking_uri):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(space),
                    "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "ray"))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("raypost: error: ") and expected in err[0], err
    assert not (tmp_path / "mlflow.db").exists()  # failed before touching tracking
    assert not (tmp_path / "ray").exists()


def test_unknown_method(capsys):
    code, err = run(capsys, "sweep", "nosuchmethod")
    assert code == 2 and err == ["raypost: error: unknown method 'nosuchmethod'; expected one of dept, im, pcp, finetune "
                                 "or the module path of a recipe"]


def test_missing_space_file(capsys, tmp_path):
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err[0] and "nope.yaml" in err[0]


def test_resume_needs_name(capsys, tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(GOOD)
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(space), "--resume")
    assert code == 2 and err == ["raypost: error: --resume needs --name of the sweep to resume"]


def test_unreachable_tracking_server_stops_before_ray(capsys, tmp_path):
    import ray

    space = tmp_path / "s.yaml"
    space.write_text(GOOD)
    started = ray.is_initialized()
    t0 = time.monotonic()
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(space),
                    "--tracking-uri", "http://127.0.0.1:9", "--storage", str(tmp_path / "ray"))
    assert code == 3
    assert len(err) == 1 and "MLflow tracking server http://127.0.0.1:9 is unreachable" in err[0]
    assert time.monotonic() - t0 < 30
    assert ray.is_initialized() == started and not (tmp_path / "ray").exists()


def test_existing_sweep_name_needs_resume(capsys, tmp_path, tracking_uri, mlflow_client):
    from raypost.tracking.runs import start_sweep_run

    start_sweep_run(mlflow_client, "raypost.recipes.synthetic", "taken", resume=False, params={})
    capsys.readouterr()  # MLflow's own store set-up messages
    space = tmp_path / "s.yaml"
    space.write_text(GOOD)
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(space), "--name", "taken",
                    "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "ray"))
    assert code == 3 and "sweep 'taken' already exists" in err[0] and "--resume" in err[0]


def test_train_bad_config_key(capsys, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("steps: 5\nwarp_speed: 9\n")
    code, err = run(capsys, "train", "raypost.recipes.synthetic", "--config", str(cfg))
    assert code == 2 and "unknown config key fixed.warp_speed" in err[0]


def test_train_help_config_lists_every_key(capsys):
    assert main(["train", "raypost.recipes.synthetic", "--help-config"]) == 0
    out = capsys.readouterr().out
    for key in ("steps", "zero_stage", "precision", "lr", "delta_rank"):
        assert f"\n{key} " in out or out.startswith(f"{key} ")


def test_fp16_on_cpu_is_refused(capsys, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("precision: fp16\ndevice: cpu\n")
    code, err = run(capsys, "train", "raypost.recipes.synthetic", "--config", str(cfg))
    assert code == 2 and "precision=fp16 needs a CUDA device" in err[0]


@pytest.mark.parametrize("fixed, expected", [
    ("{model: tiny:gpt2, readout: mean}", "readout='mean' is how an encoder classifier reads its input; model "
                                           "'tiny:gpt2' is causal"),
    ("{model: tiny:bert, readout: middle}", "readout='middle' is not one of auto, pooler, cls, mean, cls_pooler"),
])
def test_dept_bad_readout_exits_2_before_ray(tmp_path, capsys, tracking_uri, fixed, expected):
    space = tmp_path / "space.yaml"
    space.write_text(f"method: dept\nsamples: 1\nfixed: {fixed}\n")
    code, err = run(capsys, "sweep", "dept", "--space", str(space), "--tracking-uri", tracking_uri,
                    "--storage", str(tmp_path / "ray"))
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--set", "steps=abc"], "raypost: error: --set steps='abc' must be a whole number"),
    (["--set", "warp=9"], "raypost: error: --set warp: unknown config key for method raypost.recipes.synthetic"),
    (["--set", "steps=[1"], "raypost: error: --set 'steps=[1': the value is not a YAML scalar or list"),
    (["--workers", "0"], "raypost: error: --workers=0 must be at least 1"),
    (["--samples", "0"], "raypost: error: --samples=0 must be at least 1"),
    (["--cpus-per-worker", "0"], "raypost: error: --cpus-per-worker=0 must be at least 0.01"),
    (["--name", "it's"], "raypost: error: --name \"it's\": a sweep name is 1-100 letters, digits"),
    (["--name", "a/b"], "raypost: error: --name 'a/b': a sweep name is 1-100 letters, digits"),
    (["--name", "x" * 101], "raypost: error: --name 'xxxx"),
])
def test_bad_flags_name_the_flag_not_the_file(tmp_path, capsys, argv, expected, tracking_uri):
    """A value the user typed on the command line is blamed on the flag, never silently replaced."""
    space = tmp_path / "space.yaml"
    space.write_text(GOOD)
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(space),
                    "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "ray"), *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("raypost: error: ") and expected in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_space_that_is_not_a_utf8_file(tmp_path, capsys):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(latin))
    assert code == 2 and len(err) == 1 and "latin.yaml: not UTF-8 text" in err[0]
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(tmp_path))
    assert code == 2 and err == [f"raypost: error: search space {tmp_path} is a directory; give a YAML file"]
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(b"steps: 5 # \xff\n")
    code, err = run(capsys, "train", "raypost.recipes.synthetic", "--config", str(cfg))
    assert code == 2 and len(err) == 1 and "run.yaml: not UTF-8 text" in err[0]


def test_a_model_path_from_set_is_blamed_on_the_flag(tmp_path, capsys, tracking_uri):
    code, err = run(capsys, "sweep", "dept", "--set", "model=/nonexistent/path", "--tracking-uri", tracking_uri,
                    "--storage", str(tmp_path / "ray"))
    assert code == 2 and len(err) == 1, err
    assert "dept.yaml with --set model=/nonexistent/path: model path '/nonexistent/path' does not exist " \
           "(give a local folder or a Hugging Face id)" in err[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_gpus_asked_of_a_cluster_without_them(ray_cluster, tmp_path, capsys, tracking_uri, mlflow_client):
    """No GPU here and no autoscaler to add one: one line and exit 2, not a trial waiting forever;
    the sweep's run records the failure."""
    mlflow_client.search_experiments()
    capsys.readouterr()  # MLflow's own store set-up messages
    space = tmp_path / "s.yaml"
    space.write_text(GOOD)
    code, err = run(capsys, "sweep", "raypost.recipes.synthetic", "--space", str(space), "--address", ray_cluster,
                    "--gpus-per-worker", "1", "--workers", "2", "--name", "gpu", "--tracking-uri", tracking_uri,
                    "--storage", str(tmp_path / "ray"))
    assert code == 2 and err == ["raypost: error: --gpus-per-worker=1 needs 2 GPUs per trial (2 workers), but the "
                                 "Ray cluster has 0 and its autoscaler can add 0; use --gpus-per-worker 0 to train "
                                 "on CPUs, or a cluster with GPUs"]
    experiment = mlflow_client.get_experiment_by_name("raypost-raypost.recipes.synthetic")
    runs = mlflow_client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]  # the sweep's own run; no trial started


def test_gpus_an_autoscaler_can_add_are_waited_for(tmp_path, monkeypatch):
    from raypost.train.launch import Scaling
    from raypost.tune.sweep import _autoscaler_gpus, check_gpus

    monkeypatch.setenv("HOME", str(tmp_path))
    assert _autoscaler_gpus() == 0  # not a head node started by `ray up`
    (tmp_path / "ray_bootstrap_config.yaml").write_text(
        "available_node_types:\n  head: {resources: {CPU: 0}, max_workers: 0}\n"
        "  gpu1: {resources: {CPU: 4, GPU: 1}, max_workers: 4}\n  gpu4: {resources: {CPU: 48, GPU: 4}, max_workers: 2}\n")
    assert _autoscaler_gpus() == 12
    check_gpus(Scaling(workers=4, gpus_per_worker=1), have=0, autoscaled=12)  # the autoscaler will start them
    with pytest.raises(Exception, match=r"needs 16 GPUs per trial \(4 workers\), but the Ray cluster has 2 and its "
                                        r"autoscaler can add 12"):
        check_gpus(Scaling(workers=4, gpus_per_worker=4), have=2, autoscaled=12)
