"""raypost.inference.load_predictor: adapter folders, runs:/ and models:/ URIs (a local sqlite
MLflow store), bare base models, the pyfunc wrapper and ``raypost eval stepgame``."""

import json

import pytest
import torch

from raypost.errors import ConfigError, DataError
from raypost.inference import load_predictor
from raypost.recipes import dept
from raypost.stepgame import LABELS, generate, save_stepgame

QUESTION = "What is the relation of the agent A to the agent B?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A tiny:bert DePT classifier after a few steps, saved as a trial checkpoint would hold it."""
    setup = dept.setup({"method": "dept", "model": "tiny:bert", "batch_size": 4, "prompt_length": 2,
                        "lowrank_rank": 2, "max_input_length": 224, "train_k": "1", "train_per_k": 8,
                        "eval_k": "1", "eval_per_k": 2, "lr_head": 0.05}, 0, 1)
    optimizer = torch.optim.AdamW(setup.param_groups)
    for _ in range(2):
        optimizer.zero_grad()
        setup.compute_loss(setup.model, next(setup.train_batches)).backward()
        optimizer.step()
    checkpoint = tmp_path_factory.mktemp("checkpoint")
    setup.save_adapter(setup.model, checkpoint / "adapter")
    return checkpoint / "adapter"


@pytest.fixture(scope="module")
def rows():
    return [{k: r[k] for k in ("story", "question", "label")} for r in generate(1, 5, seed=7, split="x")]


@pytest.fixture(scope="module")
def expected(adapter, rows):
    return load_predictor(adapter).predict(rows)


def test_folder_forms_agree(adapter, rows, expected):
    assert len(expected) == len(rows) and set(expected) <= set(LABELS)
    assert load_predictor(adapter=adapter).predict(rows) == expected
    assert load_predictor(str(adapter.parent)).predict(rows) == expected  # a checkpoint folder holding adapter/
    assert load_predictor(adapter, model="tiny:bert").predict(rows) == expected  # same base, named explicitly
    p = load_predictor(adapter)
    assert p.predict_stepgame([r["story"] for r in rows], [r["question"] for r in rows]) == expected


def test_rows_take_a_story_string_or_list(adapter):
    p = load_predictor(adapter)
    one = p.predict([{"story": "A is to the left of B.", "question": QUESTION}])
    assert one == p.predict([{"story": ["A is to the left of B."], "question": QUESTION}])
    assert p.predict([]) == []
    with pytest.raises(DataError, match="row 0: missing field 'question'"):
        p.predict([{"story": ["A is to the left of B."]}])
    with pytest.raises(DataError, match="2 stories and 1 questions"):
        p.predict_stepgame([["a"], ["b"]], [QUESTION])


def test_bad_sources(adapter, tmp_path):
    with pytest.raises(ConfigError, match="needs an adapter"):
        load_predictor()
    with pytest.raises(ConfigError, match="give the adapter once"):
        load_predictor(adapter, adapter=tmp_path)
    with pytest.raises(ConfigError, match="is not a folder, a runs:/ URI or a models:/ URI"):
        load_predictor(tmp_path / "missing")
    with pytest.raises(DataError, match="no raypost_adapter.json"):
        load_predictor(tmp_path)
    (tmp_path / "raypost_adapter.json").write_text(json.dumps({"method": "nope", "model": "tiny:bert", "kind": "x"}))
    with pytest.raises(DataError, match="method 'nope' is not a registered method"):
        load_predictor(tmp_path)
    # a folder naming a module must not get it imported (the Zen of Python, or a module beside it)
    (tmp_path / "marker_module_xyz.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "raypost_adapter.json").write_text(json.dumps({"method": "marker_module_xyz.x", "model": "tiny:bert",
                                                                "kind": "classifier"}))
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(DataError, match="cannot choose code to import"):
            load_predictor(tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
    assert "marker_module_xyz" not in sys.modules


def test_bare_models():
    p = load_predictor(model="tiny:t5")  # generates text, matched to a label (or None)
    out = p.predict([{"story": ["A is to the left of B."], "question": QUESTION}] * 2)
    # the same answer as plain greedy HF generation on the same text, matched the same way
    import torch

    from raypost.stepgame.labels import format_input, match_label
    from raypost.stepgame.task import answer_budget

    enc = p.tokenizer(format_input(["A is to the left of B."], QUESTION), return_tensors="pt")
    with torch.no_grad():
        gen = p.model.generate(**enc, max_new_tokens=answer_budget(p.tokenizer, "seq2seq"), do_sample=False)
    assert out == [match_label(p.tokenizer.decode(gen[0], skip_special_tokens=True))] * 2
    for encoder in ("tiny:bert", "minilm"):
        with pytest.raises(ConfigError, match="is an encoder: without an adapter it has no trained StepGame head"):
            load_predictor(model=encoder)


def test_bare_causal_model_batches_like_single_examples(rows, monkeypatch):
    """Left-padded batched generation from a bare GPT-2 gives the one-at-a-time answers."""
    from raypost.stepgame import task as st

    monkeypatch.setattr(st, "match_label", lambda text: text)  # compare the raw generated text
    p = load_predictor(model="tiny:gpt2")
    batched = p.predict(rows)  # one left-padded batch of 5
    assert all(isinstance(t, str) for t in batched)
    assert batched[:3] == [p.predict([row])[0] for row in rows[:3]]


def test_cli_eval_with_an_adapter(adapter, tmp_path):
    from raypost.cli import main

    data = save_stepgame(generate(1, 3, seed=1) + generate(2, 3, seed=1), tmp_path / "qa_mixed.json")
    out = tmp_path / "out"
    assert main(["eval", "stepgame", "--adapter", str(adapter), "--data", str(data), "--out", str(out)]) == 0
    result = json.loads((out / "stepgame_results.json").read_text())
    assert result["n"] == 6 and 0 <= result["metrics"]["acc"] <= 1
    assert main(["eval", "stepgame", "--model", "minilm", "--data", str(data)]) == 2  # one line, exit code 2


def test_runs_and_models_uris_and_the_pyfunc_model(adapter, rows, expected, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from raypost.tracking.registry import log_adapter_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    try:
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("t", artifact_location=str(tmp_path / "art"))).info.run_id
        model_uri = log_adapter_model(run_id, uri, adapter)
        assert load_predictor(f"runs:/{run_id}/adapter", tracking_uri=uri).predict(rows) == expected
        mlflow.set_tracking_uri(uri)
        version = mlflow.register_model(model_uri, "stepgame-dept")
        client.set_registered_model_alias("stepgame-dept", "champion", version.version)
        assert load_predictor(adapter="models:/stepgame-dept@champion", tracking_uri=uri).predict(rows) == expected
        pyfunc = mlflow.pyfunc.load_model("models:/stepgame-dept@champion")
        assert list(pyfunc.predict(pd.DataFrame(rows))) == expected
    finally:
        mlflow.set_tracking_uri(previous)
