"""What a person sees in a terminal: a real ``raypost sweep dept`` on the pretrained MiniLM, run in
a pseudo-terminal (``script``), prints raypost's progress lines and none of the library chatter
the default console silences. Trial runs carry readable names in MLflow."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from raypost.cli import main
from raypost.tune.progress import duration, fmt, trial_label

SILENCED = [
    "LOAD REPORT",  # transformers' table of missing keys, per worker and trial
    "Setting accelerator to CPU",  # DeepSpeed guessing the device
    "built successfully",  # DeepSpeed's shm op print
    "Checkpoint successfully created",  # Ray Train's per-report lines
    "Reporting training result",
    "Requesting resources",  # the Train controller
    "Ray deduplicates logs",
    "Configuration for experiment",  # Tune's boxes
    "Trial status:",
    "config ─",
    "Started a local Ray instance",
    "A new study created",  # Optuna
]


@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a pseudo-terminal")
def test_default_console_shows_progress_and_no_chatter(ray_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "raypost.cli", "sweep", "dept", "--samples", "2", "--workers", "1",
           "--cpus-per-worker", "1", "--scheduler", "fifo", "--name", "console", "--tracking-uri", uri,
           "--storage", str(tmp_path / "ray"), "--address", ray_cluster,
           "--set", "steps=24", "--set", "eval_every=12", "--set", "batch_size=4", "--set", "train_per_k=100",
           "--set", "eval_per_k=16", "--set", "max_input_length=64"]
    env = {**os.environ, "RAYPOST_PROGRESS_S": "1", "TERM": "xterm"}
    env.pop("RAYPOST_CONSOLE", None)
    proc = subprocess.run(["script", "-qec", shlex.join(cmd), "/dev/null"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=850)
    text = proc.stdout.replace("\r", "")
    assert proc.returncode == 0, text[-4000:]
    lines = text.splitlines()

    started = [line for line in lines if re.match(r"\[\d\d:\d\d:\d\d\] started  dept prompt_length=\d+ lr_prompt=", line)]
    finished = [line for line in lines if re.match(r"\[\d\d:\d\d:\d\d\] finished dept .*: eval_accuracy 0?\.\d+", line)]
    assert len(started) == 2 and len(finished) == 2, text[-4000:]
    status = [line for line in lines if re.search(r"\d done, \d running, \d to go of 2 \| ", line)]
    assert status, text[-4000:]
    running = [line for line in lines if re.search(r"  step \d+/24  [\d.]+ steps/s  ETA \d+", line)]
    assert running, text[-4000:]  # a running trial's step / total, speed and ETA
    assert any("best eval_accuracy" in line for line in lines)  # the summary
    for chatter in SILENCED:
        assert chatter not in text, f"{chatter!r} was printed:\n{text[-4000:]}"
    assert not re.search(r"\bsteps?\b.*\d+\.0000", text)  # integers print as integers

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("raypost-dept")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`raypost.role` = 'trial'")
    names = sorted(t.info.run_name for t in trials)
    assert len(names) == 2 and all(re.fullmatch(r"dept prompt_length=\d+ lr_prompt=\S+ lr_lowrank=\S+ "
                                                r"lr_head=\S+ \[\w+\]", n) for n in names), names
    for t in trials:  # the worker's last progress tag says where the trial ended
        assert '"step": 24, "steps": 24' in t.data.tags["raypost.progress"]


def test_quiet_and_verbose_together_is_one_line(capsys):
    assert main(["sweep", "dept", "-q", "--verbose"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "raypost: error: --verbose and -q/--quiet cannot be used together: choose one"]


def test_numbers_and_labels_read_as_people_write_them():
    assert [fmt(v) for v in (80.0, 80, 0.00647, 0.4125, 1e-5, True)] == ["80", "80", "0.0065", "0.4125", "1e-05", "True"]
    assert trial_label("dept", {"lr_prompt": 0.0064664, "steps": 300.0, "m": 20}, ["m", "lr_prompt"], "ab12") == \
        "dept m=20 lr_prompt=0.0065 [ab12]"
    assert trial_label("finetune", {"lr": 1e-4}, [], "ab12") == "finetune [ab12]"
    assert [duration(s) for s in (5, 75, 3725, -3)] == ["5s", "1m15s", "1h02m", "0s"]
