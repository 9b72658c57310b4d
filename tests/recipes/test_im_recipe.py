"""The IM recipe without Ray: setup() in-process (rank 0 of 1) on the tiny GPT-2, a torch optimizer
over its parameter groups, evaluation checked against an independent one-prompt-at-a-time count,
save/load round trips for full, LoRA and DePT, and every bad input by name (also via the CLI)."""

import json

import pytest
import torch

from raypost.cli import main
from raypost.errors import ConfigError, DataError
from raypost.inference import load_predictor
from raypost.methods.im import OUTPUT, encode_example, example_from_row
from raypost.models import load_tokenizer
from raypost.recipes import im
from raypost.recipes.base import ADAPTER_META
from raypost.stepgame import LABELS, generate, match_label, to_instruction_rows
from raypost.stepgame import task as st
from raypost.stepgame.convert import INSTRUCTION
from raypost.tune.space import check_space

N_EVAL = 4


def tokenizer_of(setup):
    """The tokenizer the recipe used (every tiny model shares the byte-level one)."""
    return load_tokenizer("tiny:gpt2")


def flat(**kw):
    return {"method": "im", "model": "tiny:gpt2", "trainable": "full", "batch_size": 4, "lr": 1e-2,
            "max_seq_length": 448, "train_k": "1", "train_per_k": 8, "eval_k": "1", "eval_per_k": N_EVAL,
            "instruction_weight": 0.0, "seed": 0} | kw


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@torch.no_grad()
def batch_loss(setup, batch):
    setup.model.eval()  # no dropout: the comparison is exact
    loss = float(setup.compute_loss(setup.model, batch))
    setup.model.train()
    return loss


def fit(setup, steps):
    """AdamW on one fixed batch; returns (batch, loss before, loss after)."""
    batch = next(setup.train_batches)
    before = batch_loss(setup, batch)
    optimizer = torch.optim.AdamW(setup.param_groups)
    setup.model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        setup.compute_loss(setup.model, batch).backward()
        optimizer.step()
    return batch, before, batch_loss(setup, batch)


@pytest.fixture(scope="module")
def trained():
    """Full fine-tuning, output-only loss, 30 steps: the tiny model learns to answer with label
    words, so accuracy is not trivially 0."""
    setup = im.setup(flat(), 0, 1)
    _, before, after = fit(setup, 30)
    return setup, before, after


# ---- training ---------------------------------------------------------------------------------
def test_full_fine_tuning_lowers_the_loss(trained):
    setup, before, after = trained
    assert after < before - 1.0, (before, after)
    assert setup.params["trainable_params"] == sum(p.numel() for p in setup.model.parameters())
    assert setup.params["im_kind"] == "causal" and setup.params["im_train_rows"] == 8
    assert setup.params["eval_examples"] == N_EVAL and setup.params["im_heldout_rows"] == N_EVAL
    assert setup.params["im_train_truncated"] == 0 and setup.params["eval_truncated"] == 0


@pytest.mark.parametrize("trainable", ["lora", "dept"])
def test_lora_and_dept_train_only_their_part(trainable):
    setup = im.setup(flat(trainable=trainable, lr=1e-2, max_input_length=448, prompt_length=2,
                          lowrank_rank=2, lr_prompt=0.3, lr_lowrank=1e-2, instruction_weight=1.0), 0, 1)
    _, before, after = fit(setup, 3)
    assert after < before, (trainable, before, after)
    trainable_now = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    assert setup.params["trainable_params"] == trainable_now == sum(
        p.numel() for g in setup.param_groups for p in g["params"])
    assert trainable_now < 10_000  # the full tiny GPT-2 has 54,144


def test_seq2seq_output_only():
    """Encoder-decoders (tiny T5) train at instruction_weight=0: the decoder predicts the answer."""
    setup = im.setup(flat(model="tiny:t5", lr=1e-2), 0, 1)
    batch, before, after = fit(setup, 3)
    assert after < before
    tok = tokenizer_of(setup)
    assert tok.decode(batch["labels"][0][batch["labels"][0] != -100], skip_special_tokens=True) in {
        st.label_word(lab) for lab in LABELS}
    metrics = setup.evaluate(setup.model)
    assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["eval_output_loss"] > 0


def test_training_rows_are_stepgame_written_as_instructions():
    setup = im.setup(flat(instruction_weight=0.5), 0, 1)
    batch = next(setup.train_batches)
    tok = tokenizer_of(setup)
    weights = batch["loss_weights"][0]
    assert set(weights.unique().tolist()) == {0.0, 0.5, 1.0}  # template, instruction, output
    output = tok.decode(batch["input_ids"][0][weights == 1.0], skip_special_tokens=True)
    assert output in {st.label_word(lab) for lab in LABELS}
    instruction = tok.decode(batch["input_ids"][0][weights == 0.5])
    assert instruction.startswith(INSTRUCTION) and "Question:" in instruction


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def one_by_one(setup, rows):
    """Raw answers computed independently: the training encoding of each row cut where the output
    starts, one unpadded prompt at a time, plain HF generate."""
    model = setup.model.eval()
    tok = tokenizer_of(setup)
    answers = []
    for i, row in enumerate(to_instruction_rows(rows)):
        enc = encode_example(example_from_row(row, f"row {i}"), tok, "paper")
        ids = torch.tensor([enc.input_ids[:enc.segments.index(OUTPUT)]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=13, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        answers.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    setup.model.train()
    return answers


def eval_rows():
    return st.load_rows("generate", [1], N_EVAL, noise=False, seed=0, split="eval")


def test_evaluate_matches_an_independent_count(trained):
    setup, _, _ = trained
    rows = eval_rows()
    answers = one_by_one(setup, rows)
    right = sum(match_label(a) == r["label"] for a, r in zip(answers, rows))
    metrics = setup.evaluate(setup.model)
    assert metrics["eval_accuracy"] == pytest.approx(right / len(rows))
    assert right > 0, answers  # a meaningful check: the model does name relations by now
    assert 0 < metrics["eval_output_loss"] < 3
    # 30 full fine-tuning steps on 8 rows: the training answers are fitted better than held-out ones
    assert 0 < metrics["train_output_loss"] < metrics["eval_output_loss"] - 0.2, metrics
    assert setup.model.training


def test_final_evaluate_writes_per_k_tables(trained, tmp_path):
    setup, _, _ = trained
    accuracy = setup.evaluate(setup.model)["eval_accuracy"]
    metrics = setup.final_evaluate(setup.model, tmp_path)
    assert metrics["stepgame_acc"] == pytest.approx(accuracy) and "stepgame_acc_k1" in metrics
    assert (tmp_path / "stepgame_results.md").is_file() and (tmp_path / "stepgame_accuracy.csv").is_file()


def test_heldout_jsonl_gives_the_output_loss(trained, tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in to_instruction_rows(eval_rows())) + "\n")
    setup, _, _ = trained
    from_file = im.setup(flat(im_eval_data=str(path)), 0, 1)
    from_file.model.load_state_dict(setup.model.state_dict())
    assert from_file.evaluate(from_file.model)["eval_output_loss"] == pytest.approx(
        setup.evaluate(setup.model)["eval_output_loss"], rel=1e-5)


# ---- save / load ------------------------------------------------------------------------------
def test_full_save_and_load_predictor_round_trip(trained, tmp_path):
    setup, _, _ = trained
    setup.save_adapter(setup.model, tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / ADAPTER_META).read_text())
    assert meta["method"] == "im" and meta["trainable"] == "full" and "full model weights" in meta["weights"]
    assert (tmp_path / "adapter" / "model.safetensors").is_file()
    rows = generate(1, 6, seed=9)
    tok = tokenizer_of(setup)
    prompts, _ = im.stepgame_prompts(rows, tok, "causal", "paper", 448)
    want, _ = st.run_model(setup.model, tok, "causal", prompts, 32, with_loss=False)
    predictor = load_predictor(tmp_path / "adapter")
    assert predictor.predict(rows) == want
    assert predictor.predict_stepgame([r["story"] for r in rows], [r["question"] for r in rows]) == want


@pytest.mark.parametrize("trainable", ["lora", "dept"])
def test_adapter_round_trip_keeps_predictions(trainable, tmp_path, monkeypatch):
    setup = im.setup(flat(trainable=trainable, lr=5e-2, max_input_length=448, prompt_length=2, lowrank_rank=2,
                          lr_prompt=0.3, lr_lowrank=5e-2), 0, 1)
    fit(setup, 2)
    setup.save_adapter(setup.model, tmp_path / "a")
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert "model.safetensors" not in files  # never the base weights
    assert ("adapter_model.safetensors" if trainable == "lora" else "adapter.safetensors") in files
    monkeypatch.setattr(st, "match_label", lambda text: text)  # compare raw generated text
    tok = tokenizer_of(setup)
    prompts, _ = im.stepgame_prompts(eval_rows(), tok, "causal", "paper", 448)
    want, _ = st.run_model(setup.model, tok, "causal", prompts, 32, with_loss=False)
    assert load_predictor(tmp_path / "a").predict(eval_rows()) == want


# ---- bad input ----------------------------------------------------------------------------------
def test_jsonl_row_without_output_is_named(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Say bye"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: row has no 'output'"):
        im.setup(flat(im_train_data=str(path)), 0, 1)
    with pytest.raises(DataError, match=r"train.jsonl:2: row has no 'output'"):
        check_space(im.RECIPE, {"model": "tiny:gpt2", "im_train_data": str(path)}, {})


def test_empty_instruction_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl' is empty"):
        im.setup(flat(im_eval_data=str(empty)), 0, 1)
    with pytest.raises(ConfigError, match="im_train_data: .*nope.jsonl does not exist"):
        im.setup(flat(im_train_data=str(tmp_path / "nope.jsonl")), 0, 1)


def test_config_limits():
    with pytest.raises(ConfigError, match="instruction_weight=1.5 is above its maximum 1.0"):
        im.setup(flat(instruction_weight=1.5), 0, 1)
    with pytest.raises(ConfigError, match="model 'tiny:bert' is an encoder"):
        check_space(im.RECIPE, {"model": "tiny:bert"}, {})
    with pytest.raises(ConfigError, match=r"instruction_weight=0.5 needs a causal LM.*\(at instruction_weight=0.5\)"):
        check_space(im.RECIPE, {"model": "tiny:t5"}, {"instruction_weight": {"type": "float", "low": 0.0, "high": 0.5}})
    with pytest.raises(ConfigError, match="max_seq_length=512 exceeds DePT's max_input_length=256"):
        check_space(im.RECIPE, {"model": "tiny:gpt2", "trainable": "dept"}, {})
    for trainable in ("full", "lora", "dept"):  # ZeRO-3 works for every trainable set (tests/train/test_zero3.py)
        check_space(im.RECIPE, {"model": "tiny:gpt2", "zero_stage": 3, "trainable": trainable,
                                "max_seq_length": 128}, {})
    with pytest.raises(ConfigError, match=r"^zero_stage=4 is not one of 0, 1, 2, 3"):
        check_space(im.RECIPE, {"model": "tiny:gpt2", "zero_stage": 4}, {})
    with pytest.raises(ConfigError, match="= 520 exceeds the 512 positions"):
        check_space(im.RECIPE, {"model": "tiny:gpt2"}, {"max_seq_length": {"type": "int", "low": 64, "high": 520}})


def test_cli_bad_jsonl_exits_2_with_one_line(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Say bye", "input": "x"}\n')
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: tiny:gpt2\nim_train_data: {data}\n")
    code = main(["train", "im", "--config", str(cfg), "--storage", str(tmp_path / "ray"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("raypost: error: ")
    assert "train.jsonl:2: row has no 'output'" in err[0]
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()  # nothing started
    cfg.write_text("model: tiny:gpt2\ninstruction_weight: 2\n")
    assert main(["train", "im", "--config", str(cfg)]) == 2
    assert "instruction_weight=2 is above its maximum" in capsys.readouterr().err


# ---- the search space ---------------------------------------------------------------------------
def test_default_space_loads():
    from raypost.tune.space import default_space_file, load_space

    space = load_space(default_space_file("im"), "im")
    assert space.fixed["model"].startswith("tiny:") and space.method == "im"
    assert {"instruction_weight", "lr", "steps"} <= set(space.search)
    assert (space.search["instruction_weight"]["low"], space.search["instruction_weight"]["high"]) == (0.0, 1.0)
    assert "raypost sweep im" in default_space_file("im").read_text()
