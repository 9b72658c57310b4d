"""End-to-end check of `raypost ui`: start it, render the experiment page in headless Chromium,
and find the sweep's runs in the page. Opt-in (needs Debian's `chromium`: `make test-slow`)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "raypost ui exited early"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--virtual-time-budget=60000"]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"


def _chromium(chromium, tmp_path, *args):
    return subprocess.run([chromium, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}", *args],
                          capture_output=True, text=True, timeout=180)


def _sweep(client):
    """A sweep as raypost records it: readable trial names, searched and fixed params, curves
    logged through the worker's logger (grouped keys, constants as tags), the sweep's view."""
    from raypost.tracking.runs import OUTCOME_TAG, start_sweep_run, trial_run
    from raypost.tracking.views import save_sweep_view
    from raypost.tracking.worker import WorkerLogger
    from raypost.tune.progress import trial_label

    parent = start_sweep_run(client, "dept", "ui-sweep", resume=False, params={
        "samples": 2, "fixed.steps": 240, "search.prompt_length": '{"type": "int", "low": 10, "high": 40}',
        "search.lr_prompt": '{"type": "float", "low": 0.001, "high": 0.03, "log": true}',
        "objectives": '{"eval_accuracy": "max"}'})
    save_sweep_view(client, parent)  # at the start; the end of the sweep writes it again, below
    trials = []
    for i, (m, lr, acc) in enumerate([(20, 0.003, 0.41), (40, 0.0065, 0.45)]):
        config = {"prompt_length": m, "lr_prompt": lr, "steps": 240, "model": "minilm"}
        run = trial_run(client, parent, f"t{i}", trial_label("dept", config, ["prompt_length", "lr_prompt"], f"a1b2c3d{i}"),
                        config)
        log = WorkerLogger(run, client.tracking_uri, enabled=True)
        log.log_params({"trainable_params": 7680 + 384 * m, "world_size": 1})
        best = 0.0
        for step in range(1, 241):
            log.add(step, train_loss=2.2 - (1.1 + i * 0.1) * step / 240, lr_prompt=lr * min(1.0, step / 24))
            if step % 60 == 0:
                value = acc * step / 240 + 0.05 if step < 240 else acc * 0.75 + 0.03  # the last evaluation dips
                best = max(best, value)
                log.add(step, step=step, eval_accuracy=value, best_eval_accuracy=best, replica_max_diff=0.0,
                        tokens_per_s=900.0 + 50 * i, peak_memory_mb=1800.0 + m)
        log.add(240, stepgame_acc=acc, stepgame_acc_k1=acc + 0.1, stepgame_acc_k2=acc - 0.1)
        log.flush()
        client.set_tag(run, OUTCOME_TAG, "completed")
        client.set_terminated(run)
        trials.append(run)
    save_sweep_view(client, parent, [client.get_run(r) for r in trials])
    client.set_terminated(parent)
    return parent, trials


def test_ui_lists_sweep_runs(tmp_path, tracking_uri, mlflow_client):
    from raypost.tracking.cli import experiment_links

    """The experiment opens on its runs (not the GenAI overview) with readable trial names; the
    runs table and a two-trial compare view are saved as the screenshots in docs/ui/."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "install Debian's chromium (make test-slow does) to run this test"
    parent, trials = _sweep(mlflow_client)
    exp_id = mlflow_client.get_experiment_by_name("raypost-dept").experiment_id

    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "raypost.cli", "ui", "--port", str(port),
                           "--tracking-uri", tracking_uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/#/experiments/{exp_id}"
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui)
        # the links `raypost ui` prints: the experiment's training runs (not the GenAI overview),
        # and the sweep's trials with the searched hyperparameters and the objective as columns
        link, sweep_link = [line.split(": ", 1)[1] for line in experiment_links(tracking_uri, port)]
        assert link == f"{base}/runs?workflowType=machine_learning"
        assert sweep_link == f"{link}&viewStateShareKey=ui-sweep"
        dom = _chromium(chromium, tmp_path, "--dump-dom", link).stdout
        sweep_dom = _chromium(chromium, tmp_path, "--window-size=1900,600", "--dump-dom", sweep_link).stdout
        SHOTS.mkdir(parents=True, exist_ok=True)
        _chromium(chromium, tmp_path, "--window-size=1900,600", f"--screenshot={SHOTS / 'runs-table.png'}", sweep_link)
        charts = f"{sweep_link}&compareRunsMode=CHART"
        charts_dom = _chromium(chromium, tmp_path, "--window-size=1500,1600", "--dump-dom", charts).stdout
        _chromium(chromium, tmp_path, "--window-size=1500,1600", f"--screenshot={SHOTS / 'chart-sections.png'}", charts)
        compare = (f"http://127.0.0.1:{port}/#/compare-runs?runs={urllib.parse.quote(json.dumps(trials))}"
                   f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}&workflowType=machine_learning")
        compare_dom = _chromium(chromium, tmp_path, "--dump-dom", compare).stdout
        _chromium(chromium, tmp_path, "--window-size=1500,1100", f"--screenshot={SHOTS / 'compare-two-trials.png'}",
                  compare)
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    assert "ui-sweep" in dom, dom[-2000:]  # the runs table, with the sweep's parent run
    assert "mlflow.experiment-side-nav.genai" not in dom  # the model-training navigation, not GenAI's
    assert "Detect Issues in Your Traces" not in dom  # not the GenAI pages
    assert "<strong>3</strong> matching runs" in dom, "expected the parent and its 2 trials"
    # the sweep's view: its 2 trials, best first, with the searched and objective columns
    assert "<strong>2</strong> matching runs" in sweep_dom, sweep_dom[-3000:]
    for column in ("prompt_length", "lr_prompt", "eval/best_accuracy", "eval/accuracy", "raypost.outcome"):
        assert column in sweep_dom, column
    first, second = (sweep_dom.index(f"[a1b2c3d{i}]") for i in (1, 0))
    assert first < second, "the better trial (m=40) is not listed first"
    # the chart view: one section per metric prefix, eval and train first (system/ keys apart)
    import re

    sections = re.findall(r'white-space: pre;">([^<]+)</div><div[^>]*>\((\d+)\)', charts_dom)
    assert sections == [("eval", "2"), ("train", "2"), ("stepgame", "3"), ("System metrics", "2")], sections
    assert "dept prompt_length=20 lr_prompt=0.003 [a1b2c3d0]" in compare_dom, compare_dom[-2000:]
    assert "lr_prompt" in compare_dom and "0.0065" in compare_dom  # the params side by side
    for shot in ("runs-table.png", "compare-two-trials.png", "chart-sections.png"):
        assert (SHOTS / shot).stat().st_size > 20_000  # a rendered page, not a blank one
