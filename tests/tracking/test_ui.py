"""End-to-end check of `raypost ui`: start it, render the experiment page in headless Chromium,
and find the sweep's runs in the page. Opt-in (needs Debian's `chromium`: `make test-slow`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

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


def test_ui_lists_sweep_runs(tmp_path, tracking_uri, mlflow_client):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "install Debian's chromium (make test-slow does) to run this test"
    from raypost.tracking.runs import start_sweep_run, trial_run

    parent = start_sweep_run(mlflow_client, "dept", "ui-sweep", resume=False, params={"samples": 2})
    for i in range(2):
        run = trial_run(mlflow_client, parent, f"t{i}", f"ui_trial_{i}", {"lr_prompt": 0.3 + i / 10})
        mlflow_client.log_metric(run, "eval_accuracy", 0.5 + i / 10, step=1)
        mlflow_client.set_terminated(run)
    mlflow_client.set_terminated(parent)
    exp_id = mlflow_client.get_experiment_by_name("raypost-dept").experiment_id

    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "raypost.cli", "ui", "--port", str(port),
                           "--tracking-uri", tracking_uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui)
        page = f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs"  # the "Training runs" tab
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=60000", "--dump-dom", page],
            capture_output=True, text=True, timeout=120).stdout
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    assert "ui-sweep" in dom, dom[-2000:]  # the sweep's parent run (its trials nest under it)
    assert "raypost-dept" in dom
    assert "<strong>3</strong> matching runs" in dom, "expected the parent and its 2 trials"
