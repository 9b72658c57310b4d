"""Bad input to the commands that are not sweeps (tracking, predict, eval, data, report): one line
naming the value, exit 2 (input) or 3 (tracking), within seconds, and no partial file or new
tracking store left behind. None of these starts Ray. (`raypost sweep`/`train`: tests/tune.)"""

from __future__ import annotations

import json
import time

import pytest

from raypost.cli import main


def run(capsys, *argv):
    t0 = time.monotonic()
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, time.monotonic() - t0


@pytest.fixture
def stepgame_file(tmp_path):
    from raypost.stepgame.generator import generate
    from raypost.stepgame.loader import save_stepgame

    return save_stepgame(generate(1, 4, seed=0, split="valid"), tmp_path / "data" / "qa1_valid.json")


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_an_unknown_tracking_scheme_is_one_line_exit_3(capsys):
    code, err, _ = run(capsys, "promote", "some-sweep", "--name", "x", "--tracking-uri", "bogus://x")
    assert code == 3 and len(err) == 1, err
    assert err[0].startswith("raypost: error: the MLflow tracking store failed: ") and "bogus" in err[0]


@pytest.mark.parametrize("argv", [["promote", "nosweep", "--name", "x"], ["report", "nosweep"]])
def test_reading_commands_never_create_a_store(tmp_path, capsys, argv):
    db = tmp_path / "mlflow.db"
    code, err, _ = run(capsys, *argv, "--tracking-uri", f"sqlite:///{db}",
                       *(["--out", str(tmp_path / "rep")] if argv[0] == "report" else []))
    assert code == 3 and err == [f"raypost: error: no MLflow store at {db} (nothing has been tracked there; "
                                 "pass --tracking-uri or set MLFLOW_TRACKING_URI)"]
    assert not db.exists()


def test_eval_checks_the_run_id_before_evaluating(tmp_path, capsys, mlflow_client, tracking_uri, stepgame_file):
    mlflow_client.search_experiments()  # the store exists, the run does not
    code, err, seconds = run(capsys, "eval", "stepgame", "--model", "tiny:t5", "--data", str(stepgame_file),
                             "--run-id", "0123abcd", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "o"))
    assert code == 3 and len(err) == 1 and err[0].startswith("raypost: error: --run-id 0123abcd: no such MLflow run")
    assert not (tmp_path / "o").exists()  # no evaluation ran


def test_eval_out_that_cannot_be_written_stops_before_evaluating(tmp_path, capsys, stepgame_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err, _ = run(capsys, "eval", "stepgame", "--model", "tiny:t5", "--data", str(stepgame_file),
                       "--out", str(blocker / "sub"))
    assert code == 2 and err == [f"raypost: error: --out {blocker / 'sub'}: cannot write there "
                                 f"({blocker} is a file, not a folder)"]


def test_predict_refuses_binary_input_and_unwritable_output_before_loading(tmp_path, capsys):
    binary = tmp_path / "rows.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    code, err, _ = run(capsys, "predict", str(tmp_path / "no-adapter"), "--input", str(binary))
    assert code == 2 and err == [f"raypost: error: input file {binary} is not UTF-8 text (byte 0); give JSONL "
                                 "rows or a StepGame JSON file"]
    rows = tmp_path / "ok.jsonl"
    rows.write_text(json.dumps({"story": ["A is left of B."], "question": "Where is A relative to B?"}) + "\n")
    code, err, _ = run(capsys, "predict", str(tmp_path / "no-adapter"), "--input", str(rows),
                       "--output", str(tmp_path))
    assert code == 2 and err == [f"raypost: error: --output {tmp_path} is a directory; give a file path"]


def test_data_stepgame_checks_every_target_before_writing_any(tmp_path, capsys):
    out = tmp_path / "D"
    (out / "qa2_train.json").mkdir(parents=True)
    code, err, _ = run(capsys, "data", "stepgame", "--k", "1-3", "--n", "5", "--out", str(out))
    assert code == 2 and err == [f"raypost: error: --out {out}: qa2_train.json is a directory; nothing was written"]
    assert files_under(out) == ["qa2_train.json"]  # qa1 was not written first


def test_data_stepgame_writes_whole_files(tmp_path, capsys):
    out = tmp_path / "D"
    code, _, _ = run(capsys, "data", "stepgame", "--k", "1-2", "--n", "4", "--out", str(out))
    assert code == 0 and files_under(out) == ["qa1_train.json", "qa2_train.json"]  # no temporaries left
    assert len(json.loads((out / "qa2_train.json").read_text())) == 4


def test_report_out_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err, _ = run(capsys, "report", "any", "--out", str(blocker / "r"))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"raypost: error: --out {blocker / 'r'}: cannot write")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_that_nothing_answers_stops_before_tracking(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    code, err, _ = run(capsys, "sweep", "dept", "--address", "127.0.0.1:1", "--samples", "1",
                       "--tracking-uri", f"sqlite:///{db}", "--set", "model=tiny:bert")
    assert code == 2 and err == ["raypost: error: --address 127.0.0.1:1: no Ray cluster answers there "
                                 "(ConnectionRefusedError); start one (`ray start --head`, `ray up`) or leave "
                                 "--address out for a local Ray"]
    assert not db.exists()  # no parent run was opened, so none is left RUNNING
    code, err, _ = run(capsys, "train", "dept", "--address", "nonsense")
    assert code == 2 and err == ["raypost: error: --address 'nonsense' must be 'auto', HOST:PORT or ray://HOST:PORT"]


@pytest.mark.timeout(120)
def test_predict_from_a_server_that_does_not_answer(tmp_path, capsys, monkeypatch):
    """Bounded retries (raypost.knobs) make it seconds, not MLflow's minutes; the download
    folder is removed although nothing loaded."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the adapter download folder goes here
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"story": ["A is left of B."], "question": "Where is A relative to B?"}) + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    code, err, _ = run(capsys, "predict", "models:/x@champion", "--input", str(rows), "--tracking-uri", url)
    assert code == 3 and len(err) == 1 and err[0].startswith(f"raypost: error: cannot download models:/x@champion from {url}")
    assert files_under(tmp_path) == ["rows.jsonl"]  # no raypost-adapter-* folder left


@pytest.fixture
def read_only_store(tmp_path):
    """A real SQLite store on a read-only filesystem (a read-only bind mount; needs root)."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only bind mount needs root")
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{src / 'mlflow.db'}").search_experiments()  # the store exists
    for cmd in (["mount", "--bind", str(src), str(ro)], ["mount", "-o", "remount,ro,bind", str(ro)]):
        if subprocess.run(cmd, capture_output=True).returncode:
            subprocess.run(["umount", str(ro)], capture_output=True)
            pytest.skip("this machine does not allow a read-only bind mount")
    yield ro / "mlflow.db"
    subprocess.run(["umount", str(ro)], check=True)


def test_a_read_only_sqlite_store_is_one_line_exit_3(read_only_store, tmp_path):
    """Seen by a user: the whole of stderr is one line (MLflow's own traceback logging included)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "raypost.cli", "sweep", "dept", "--samples", "1", "--name", "ro",
                           "--tracking-uri", f"sqlite:///{read_only_store}", "--set", "model=tiny:bert"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == ["raypost: error: the MLflow tracking store failed: MlflowException: "
                                                "(sqlite3.OperationalError) attempt to write a readonly database"]
