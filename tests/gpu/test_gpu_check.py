"""The GPU check (benchmarks/gpu_check.py, ``make gpu-check``): on a machine with a CUDA device it
runs DePT, IM and fine-tuning at bf16 and ZeRO stages 0 and 3, a 2-trial sweep on the GPU and the
DePT efficiency benchmark at real size, and writes the results that are committed with the GPU
and the versions. Skipped, with its reason, where no CUDA device is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible")]


def test_gpu_check():
    out = REPO / "benchmarks" / "results"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["meta"]["device"] == "cuda" and report["meta"]["device_name"]
    for row in report["recipes"]:
        assert row["devices"] == ["cuda"] and "bfloat16" in row["dtypes"], row
        assert row["partitioned"] == (row["zero_stage"] == 3) and row["saved_files"], row
    assert {r["recipe"] for r in report["recipes"]} == {"dept", "im", "finetune"}
    assert [t["device"] for t in report["sweep"]["trials"]] == ["cuda", "cuda"], report["sweep"]
    assert report["efficiency"]["ok"] and report["ok"] and proc.returncode == 0, proc.stderr[-3000:]
