import json
import sys
import types

import pytest

from raypost.cli import main
from raypost.stepgame import LABEL_WORDS, LABELS, load_stepgame
from raypost.stepgame.evaluate import FILES


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    assert main(["data", "stepgame", "--k", "1-3,5", "--n", "20", "--noise", "--seed", "0", "--split", "valid",
                 "--out", str(out)]) == 0
    return out


def test_generate_writes_files_that_load_back(generated):
    assert sorted(p.name for p in generated.iterdir()) == [f"qa{k}_valid.json" for k in (1, 2, 3, 5)]
    ds = load_stepgame(generated)
    assert ds.num_rows == 80 and list(ds["k"]) == [k for k in (1, 2, 3, 5) for _ in range(20)]
    assert all(ds["noisy"]) and all(h >= 1 for h in ds["hops"])
    row = json.loads((generated / "qa5_valid.json").read_text())["0"]
    assert set(row) == {"story", "question", "label", "k", "hops", "noisy", "noise_nodes"}


def test_check_prints_a_table_per_k(generated, capsys):
    assert main(["data", "stepgame-check", str(generated)]) == 0
    out = capsys.readouterr().out
    assert "| noisy | 5 | 20 | 20 | 0 | 0 | 0 | 0 | 0 | 0 | 0.0 |" in out


def test_to_instructions(generated, tmp_path, capsys):
    out = tmp_path / "im" / "stepgame.jsonl"
    assert main(["data", "stepgame-to-instructions", str(generated / "qa1_valid.json"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"instruction", "input", "output"}
    assert rows[0]["input"].startswith("Story: ") and rows[0]["output"] in LABEL_WORDS


@pytest.mark.parametrize("argv, message", [
    (["data", "stepgame", "--k", "0-3", "--out", "x"], "--k='0-3' must name k values between 1 and 10"),
    (["data", "stepgame", "--k", "a-b", "--out", "x"], "--k='a-b' is not a list of k values"),
    (["data", "stepgame", "--n", "0", "--out", "x"], "--n=0 must be at least 1"),
    (["data", "stepgame-check", "missing_dir"], "missing_dir: no such file or folder"),
    (["eval", "stepgame", "--data", "x.json"], "give --adapter or --model to evaluate"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raypost: error: {message}") and err.endswith("\n") and err.count("\n") == 1


def test_malformed_row_is_named(tmp_path, capsys):
    bad = tmp_path / "qa2_test.json"
    bad.write_text(json.dumps({"0": {"story": ["A is above B."], "question": "?", "label": "north"}}))
    assert main(["data", "stepgame-check", str(bad)]) == 2
    expected = f"{bad}:0: unknown label 'north' (expected one of {', '.join(LABELS)})"
    assert capsys.readouterr().err == f"raypost: error: {expected}\n"


class _Predictor:
    """Answers 'left' as generated text, except 'I do not know' for short stories (k=1 has 3 sentences)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def predict_stepgame(self, stories, questions):
        assert len(stories) == len(questions) and isinstance(stories[0], list)
        return ["I do not know" if len(s) < 4 else "The answer is left." for s in stories]


def test_eval_writes_results_and_logs_to_a_run(generated, tmp_path, monkeypatch, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    made = []
    fake = types.ModuleType("raypost.inference")
    fake.load_predictor = lambda **kwargs: made.append(_Predictor(**kwargs)) or made[-1]
    monkeypatch.setitem(sys.modules, "raypost.inference", fake)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    uri = f"file:{tmp_path / 'mlruns'}"
    run_id = MlflowClient(uri).create_run("0").info.run_id
    out = tmp_path / "eval"
    try:
        data = f"{generated / 'qa1_valid.json'},{generated / 'qa3_valid.json'}"  # comma-separated paths
        code = main(["eval", "stepgame", "--model", "tiny:t5", "--data", data, "--limit", "10", "--out", str(out),
                     "--tracking-uri", uri, "--run-id", run_id])
    finally:
        mlflow.set_tracking_uri(previous)
    assert code == 0
    assert made[0].kwargs == {"adapter": None, "model": "tiny:t5", "tracking_uri": uri}
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    rows = load_stepgame([generated / "qa1_valid.json", generated / "qa3_valid.json"], limit_per_file=10).to_list()
    expected = sum(r["label"] == "left" and r["k"] == 3 for r in rows) / 10
    metrics = json.loads((out / "stepgame_results.json").read_text())["metrics"]
    assert metrics["acc_k1"] == 0.0 and metrics["acc_k3"] == expected and metrics["unmatched_share"] == 0.5
    logged = MlflowClient(uri).get_run(run_id).data.metrics
    assert logged["stepgame/acc_k3"] == expected and logged["stepgame/acc_k1"] == 0.0
    assert "StepGame evaluation" in capsys.readouterr().out
