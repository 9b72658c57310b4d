import csv
import json

import pytest

from raypost.errors import DataError
from raypost.stepgame import LABEL2ID, LABELS, evaluate, log_to_mlflow, to_instruction_rows, write_results
from raypost.stepgame.evaluate import FILES

Q = "What is the relation of the agent {} to the agent {}?"


def _row(story, x, y, label, k, hops, noisy):
    return {"story": story, "question": Q.format(x, y), "label": label, "k": k, "hops": hops, "noisy": noisy,
            "source": "hand"}


# label, prediction: right / right (text) / right (text) / wrong / unmatched / wrong against a wrong label
ROWS = [
    _row(["A is to the left of B."], "A", "B", "left", 1, 1, False),
    _row(["C is above D."], "C", "D", "above", 1, 1, False),
    _row(["E is to the left of F.", "F is above G."], "E", "G", "upper-left", 2, 2, False),
    _row(["H is below I.", "I is to the right of J.", "K is above L."], "H", "I", "below", 2, 1, True),
    _row(["M is to the right of N.", "N is to the right of O.", "P is below Q."], "M", "O", "right", 2, 2, True),
    _row(["R is above S.", "S is above T.", "T is above U.", "V is to the left of W."], "R", "U", "below", 3, 3, True),
]
PREDICTIONS = ["left", "The answer is above.", "Upper-Left.", "left", None, "above"]


@pytest.fixture(scope="module")
def result():
    import datasets

    return evaluate(datasets.Dataset.from_list(ROWS), PREDICTIONS)


def test_accuracy_per_k_hops_and_setting(result):
    assert (result.n, result.accuracy) == (6, 0.5)
    assert {k: result.acc("all", "k", k) for k in (1, 2, 3)} == {1: 1.0, 2: 1 / 3, 3: 0.0}
    assert {h: result.acc("all", "hops", h) for h in (1, 2, 3)} == {1: 2 / 3, 2: 0.5, 3: 0.0}
    assert (result.acc("clean"), result.acc("noisy")) == (1.0, 0.0)
    assert result.acc("clean", "k", 2) == 1.0 and result.acc("noisy", "k", 2) == 0.0
    m = result.metrics()
    assert m["acc_k1"] == 1.0 and m["noisy_acc_hops2"] == 0.0 and m["clean_acc"] == 1.0
    assert m["unmatched_share"] == 1 / 6
    assert m["mislabelled_share"] == 1 / 6  # the last row's label contradicts its story
    assert m["acc_checked"] == 3 / 5


def test_confusion_matrix(result):
    c = result.confusion
    assert len(c) == 9 and all(len(row) == 9 for row in c)
    for label in ("left", "above", "upper-left"):
        assert c[LABEL2ID[label]][LABEL2ID[label]] == 1
    assert c[LABEL2ID["below"]][LABEL2ID["left"]] == 1 and c[LABEL2ID["below"]][LABEL2ID["above"]] == 1
    assert sum(map(sum, c)) == 5  # the unmatched answer is not in the matrix


def test_files_written(result, tmp_path):
    paths = write_results(result, tmp_path)
    assert sorted(p.name for p in paths) == sorted(FILES) and all(p.stat().st_size > 0 for p in paths)
    md = (tmp_path / "stepgame_results.md").read_text()
    assert "6 examples, accuracy 0.5000, clean 1.0000, noisy 0.0000" in md
    assert "| 2 | 0.333 (3) | 1.000 (1) | 0.000 (2) |" in md
    rows = list(csv.DictReader((tmp_path / "stepgame_accuracy.csv").open()))
    assert {"group": "all", "by": "hops", "value": "1", "n": "3", "correct": "2", "accuracy": "0.666667"} in rows
    confusion = list(csv.reader((tmp_path / "stepgame_confusion.csv").open()))
    assert confusion[0][1:] == list(LABELS) and confusion[1 + LABEL2ID["below"]][1 + LABEL2ID["above"]] == "1"
    assert json.loads((tmp_path / "stepgame_results.json").read_text())["metrics"]["acc"] == 0.5
    assert (tmp_path / "stepgame_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    """A file-based MLflow store in tmp_path; the previous tracking URI comes back afterwards."""
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    uri = f"file:{tmp_path / 'mlruns'}"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


def test_log_to_mlflow_only_inside_a_run(result, tmp_path, tracking_uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    out = tmp_path / "eval"
    write_results(result, out)
    assert log_to_mlflow(result, out) is False
    with mlflow.start_run() as run:
        assert log_to_mlflow(result, out) is True
    client = MlflowClient(tracking_uri)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["stepgame/acc"] == 0.5 and metrics["stepgame/acc_k1"] == 1.0
    assert metrics["stepgame/acc_hops1"] == pytest.approx(2 / 3) and metrics["stepgame/noisy_acc"] == 0.0
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "stepgame")}
    assert logged == {f"stepgame/{name}" for name in FILES}


def test_prediction_count_must_match():
    with pytest.raises(DataError, match="got 2 predictions for 6 examples"):
        evaluate(ROWS, ["left", "right"])


def test_instruction_rows():
    rows = to_instruction_rows(ROWS[2:3])
    assert rows[0]["input"] == f"Story: E is to the left of F. F is above G.\nQuestion: {Q.format('E', 'G')}"
    assert rows[0]["output"] == "upper left" and "upper left" in rows[0]["instruction"]


def test_instruction_rows_take_a_story_given_as_one_string():
    """A one-string story is one sentence, not a list of characters to join with spaces."""
    row = {**ROWS[2], "story": "E is to the left of F. F is above G."}
    assert to_instruction_rows([row]) == to_instruction_rows(ROWS[2:3])
    assert to_instruction_rows([{**ROWS[0], "story": "A is to the left of B."}])[0]["input"].startswith(
        "Story: A is to the left of B.\nQuestion: ")
