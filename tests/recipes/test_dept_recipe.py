"""The DePT recipe without Ray: setup() in-process (rank 0 of 1), a torch optimizer over its
parameter groups, evaluation checked against an independent one-example-at-a-time computation,
save/load round trips, rank sharding, and the search-space checks.

Tiny config-built models cover the three kinds (tiny:bert classifier, tiny:t5 seq2seq, tiny:gpt2
causal); the pretrained MiniLM runs once as a classifier.
"""

import json

import pytest
import torch

from raypost.errors import ConfigError, DataError
from raypost.inference import load_predictor
from raypost.recipes import dept
from raypost.recipes.base import ADAPTER_META
from raypost.stepgame import LABELS, format_input, generate, label_word, match_label, save_stepgame
from raypost.stepgame import task as st
from raypost.tune.space import check_space

TINY = {"classifier": "tiny:bert", "seq2seq": "tiny:t5", "causal": "tiny:gpt2"}
S = 224  # byte-level tokens: a k=1 input is at most ~190 bytes, so nothing is cut
N_EVAL = 4


def flat(model, **kw):
    return {"method": "dept", "model": model, "batch_size": 4, "prompt_length": 3, "lowrank_rank": 2,
            "max_input_length": S, "train_k": "1", "train_per_k": 16, "eval_k": "1", "eval_per_k": N_EVAL,
            "lr_prompt": 0.3, "lr_lowrank": 0.05, "lr_head": 0.05, "seed": 0} | kw


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@torch.no_grad()
def fixed_batch_loss(setup, batch):
    setup.model.eval()  # no dropout: the comparison is exact
    loss = float(setup.compute_loss(setup.model, batch))
    setup.model.train()
    return loss


@pytest.fixture(scope="module", params=list(TINY))
def trained(request):
    """(kind, setup, loss before, loss after) after 8 AdamW steps on one fixed batch."""
    kind = request.param
    setup = dept.setup(flat(TINY[kind]), 0, 1)
    batch = next(setup.train_batches)
    before = fixed_batch_loss(setup, batch)
    optimizer = torch.optim.AdamW(setup.param_groups)
    setup.model.train()
    for _ in range(8):
        optimizer.zero_grad()
        setup.compute_loss(setup.model, batch).backward()
        optimizer.step()
    return kind, setup, before, fixed_batch_loss(setup, batch)


def eval_rows():
    return st.load_rows("generate", [1], N_EVAL, noise=False, seed=0, split="eval")


# ---- training ---------------------------------------------------------------------------------
def test_loss_drops_on_a_fixed_batch(trained):
    kind, setup, before, after = trained
    assert after < before - 0.01, (kind, before, after)


def test_params_count_exactly_what_trains(trained):
    kind, setup, _, _ = trained
    trainable = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    in_groups = sum(p.numel() for g in setup.param_groups for p in g["params"])
    p = setup.params
    assert p["trainable_params"] == trainable == in_groups
    assert p["dept_trainable_params"] == 3 * 32 + 2 * (S + 32)  # m*d + r*(s+d) at d=32
    assert p["dept_kind"] == kind and (p["dept_m"], p["dept_r"], p["dept_s"], p["dept_d"]) == (3, 2, S, 32)
    assert p["train_examples"] == 16 and p["eval_examples"] == N_EVAL and p["train_truncated"] == 0
    assert {g["name"] for g in setup.param_groups} == ({"prompt", "lowrank", "head"} if kind == "classifier"
                                                      else {"prompt", "lowrank"})
    assert all(not p.requires_grad for n, p in setup.model.base.named_parameters()
               if not n.startswith(("classifier", "score")))


def test_batches_per_kind(trained):
    kind, setup, _, _ = trained
    batch = next(setup.train_batches)
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] <= S
    if kind == "classifier":
        assert batch["labels"].shape == (4,) and 0 <= int(batch["labels"].min()) <= int(batch["labels"].max()) < 9
    elif kind == "causal":  # labels = -100 on the prompt, then the answer tokens
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            answer = labels[labels != -100]
            n = int(mask.sum())
            assert torch.equal(ids[n - len(answer):n], answer)
            tok = dept.build_model("tiny:gpt2", "causal", dept.DeptConfig(prompt_length=1, lowrank_rank=1))[1]
            text = tok.decode(answer, skip_special_tokens=True)
            assert text.strip() in {label_word(lab) for lab in LABELS}
            assert tok.decode(ids[:n - len(answer)]).endswith(st.ANSWER_PREFIX)
    else:  # seq2seq: the target is the label word (+ </s>)
        tok = dept.build_model("tiny:t5", "seq2seq", dept.DeptConfig(prompt_length=1, lowrank_rank=1))[1]
        for labels in batch["labels"]:
            assert tok.decode(labels[labels != -100], skip_special_tokens=True) in {label_word(lab) for lab in LABELS}


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def one_by_one(setup, kind, rows):
    """Raw answers computed independently: one unpadded example at a time, no shared code path."""
    model = setup.model.eval()
    tok = setup.evaluate.__self__.tokenizer
    answers = []
    for row in rows:
        text = format_input(row["story"], row["question"])
        if kind == "classifier":
            ids = torch.tensor([tok(text)["input_ids"]])
            answers.append(LABELS[int(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.argmax())])
            continue
        if kind == "causal":
            ids = torch.tensor([tok(text + "\nAnswer:", add_special_tokens=False)["input_ids"]])
        else:
            ids = torch.tensor([tok(text)["input_ids"]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=13,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        answers.append(tok.decode(out[0], skip_special_tokens=True))
    setup.model.train()
    return answers


def test_evaluate_matches_an_independent_computation(trained, monkeypatch):
    kind, setup, _, _ = trained
    rows = eval_rows()
    raw = one_by_one(setup, kind, rows)
    metrics = setup.evaluate(setup.model)
    expected = sum(match_label(a) == r["label"] for a, r in zip(raw, rows)) / len(rows)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert metrics["eval_accuracy"] == pytest.approx(expected)
    assert metrics["eval_loss"] > 0
    assert setup.model.training  # evaluate puts the model back in training mode
    # the batched, padded, length-sorted path gives the very same raw answers (not just labels)
    monkeypatch.setattr(st, "match_label", lambda text: text)
    task = setup.evaluate.__self__
    batched, _ = st.run_model(setup.model, task.tokenizer, kind, task.eval_examples, batch_size=4)
    assert batched == raw


def test_final_evaluate_writes_tables_and_reuses_predictions(trained, tmp_path, monkeypatch):
    kind, setup, _, _ = trained
    accuracy = setup.evaluate(setup.model)["eval_accuracy"]
    calls = []
    real = st.run_model
    monkeypatch.setattr(st, "run_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = setup.final_evaluate(setup.model, tmp_path)
    assert calls == []  # same weights as the last evaluate: predictions are reused
    assert metrics["stepgame_acc"] == pytest.approx(accuracy) and "stepgame_acc_k1" in metrics
    assert (tmp_path / "stepgame_results.md").is_file() and (tmp_path / "stepgame_accuracy.png").is_file()
    with torch.no_grad():  # as DeepSpeed writes updates: through .data, which bumps no tensor version
        setup.param_groups[0]["params"][0].data.add_(1.0)
    setup.evaluate(setup.model)
    assert calls == [1]  # changed weights: predicted again
    with torch.no_grad():
        setup.param_groups[0]["params"][0].data.sub_(1.0)


# ---- save / load ------------------------------------------------------------------------------
def test_save_adapter_and_load_predictor_round_trip(trained, tmp_path, monkeypatch):
    kind, setup, _, _ = trained
    setup.save_adapter(setup.model, tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / ADAPTER_META).read_text())
    assert meta | {"max_input_length": S} == meta and meta["method"] == "dept" and meta["kind"] == kind
    assert meta["model"] == TINY[kind] and meta["task"] == "stepgame" and meta["labels"] == list(LABELS)
    assert (tmp_path / "adapter" / "adapter.safetensors").is_file()
    monkeypatch.setattr(st, "match_label", lambda text: text)  # compare raw answers, not just labels
    rows = eval_rows()
    task = setup.evaluate.__self__
    expected, _ = st.run_model(setup.model, task.tokenizer, kind, task.eval_examples, batch_size=32)
    predictor = load_predictor(tmp_path / "adapter")
    assert predictor.predict(rows) == expected
    assert predictor.predict_stepgame([r["story"] for r in rows[:2]], [r["question"] for r in rows[:2]]) == expected[:2]


# ---- sharding and data ------------------------------------------------------------------------
def test_ranks_get_disjoint_examples():
    cfg = flat("tiny:bert", train_per_k=24, batch_size=3)
    seen = []
    for rank in (0, 1):
        setup = dept.setup(cfg, rank, 2)
        rows = set()
        for _ in range(24 // (3 * 2)):  # one epoch
            batch = next(setup.train_batches)
            rows |= {tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])}
        seen.append(rows)
    assert len(seen[0]) == len(seen[1]) == 12 and not seen[0] & seen[1]


def test_identical_initial_weights_on_every_rank():
    a, b = dept.setup(flat("tiny:bert"), 0, 2), dept.setup(flat("tiny:bert"), 1, 2)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name


def test_too_few_examples_for_the_batch():
    with pytest.raises(DataError, match="batch_size=8 on 2 workers"):
        dept.setup(flat("tiny:bert", train_per_k=10, batch_size=8), 0, 2)


def test_official_format_files(tmp_path):
    for k in (1, 2):
        save_stepgame(generate(k, 5, seed=3), tmp_path / "clean" / f"qa{k}_train.json")
    rows = st.load_rows(str(tmp_path), [2], 3, noise=False, seed=0, split="train")
    assert len(rows) == 3 and {r["k"] for r in rows} == {2}
    setup = dept.setup(flat("tiny:bert", train_data=str(tmp_path), train_per_k=0, train_k="1-2",
                            eval_data=str(tmp_path / "clean" / "qa1_train.json"), eval_per_k=0), 0, 1)
    assert setup.params["train_examples"] == 10 and setup.params["eval_examples"] == 5
    with pytest.raises(ConfigError, match="eval_data: .*does not exist"):
        dept.setup(flat("tiny:bert", eval_data=str(tmp_path / "nope")), 0, 1)


def test_long_inputs_lose_the_story_start_not_the_question():
    tok = dept.build_model("tiny:bert", "classifier", dept.DeptConfig(prompt_length=1, lowrank_rank=1))[1]
    rows = generate(3, 2, seed=0)
    for kind in ("classifier", "causal"):
        examples, cut = st.encode(rows, tok, kind, 128)  # byte tokens: k=3 inputs have ~300
        assert cut == 2
        for ex, row in zip(examples, rows):
            assert len(ex["input_ids"]) <= 128
            text = tok.decode(ex["input_ids"][:ex.get("prompt_len", len(ex["input_ids"]))], skip_special_tokens=True)
            assert row["question"] in text


def test_bad_data_config_names_the_key():
    with pytest.raises(ConfigError, match="train_k"):
        dept.setup(flat("tiny:bert", train_k="0-3"), 0, 1)
    with pytest.raises(ConfigError, match="model_kind"):
        dept.setup(flat("tiny:bert", model_kind="mlm"), 0, 1)
    with pytest.raises(ConfigError, match="unknown config key 'rank'"):
        dept.setup(flat("tiny:bert", rank=2), 0, 1)


# ---- search-space checks ----------------------------------------------------------------------
def space(**search):
    return {"model": "minilm", "param_budget": 15360, "max_input_length": 96, "prompt_length": 10,
            "method": "dept"}, search


def test_check_space_accepts_the_default_space():
    from raypost.tune.space import default_space_file, load_space

    loaded = load_space(default_space_file("dept"), "dept")
    assert loaded.fixed["model"] == "minilm" and "prompt_length" in loaded.search
    check_space(dept.RECIPE, *space(prompt_length={"type": "int", "low": 0, "high": 40}))  # 40 x 384 = 15360 fits


def test_check_space_budget_violated_by_the_prompt_length_range():
    with pytest.raises(ConfigError, match=r"prompt_length=41 does not fit param_budget=15360.*d=384.*<= 40"):
        check_space(dept.RECIPE, *space(prompt_length={"type": "int", "low": 0, "high": 41}))
    with pytest.raises(ConfigError, match="prompt_length=60 does not fit param_budget=15360"):
        check_space(dept.RECIPE, *space(prompt_length={"type": "categorical", "values": [10, 60]}))


def test_check_space_other_limits():
    fixed, _ = space()
    with pytest.raises(ConfigError, match=r"prompt_length=-2 is below its minimum 0 \(at prompt_length=-2\)"):
        check_space(dept.RECIPE, fixed, {"prompt_length": {"type": "int", "low": -2, "high": 4}})
    with pytest.raises(ConfigError, match=r"lowrank_rank=-1 is below its minimum 0 \(at lowrank_rank=-1\)"):
        check_space(dept.RECIPE, {"model": "minilm"}, {"lowrank_rank": {"type": "int", "low": -1, "high": 4}})
    with pytest.raises(ConfigError, match="param_budget and lowrank_rank are both set"):
        check_space(dept.RECIPE, fixed, {"lowrank_rank": {"type": "int", "low": 1, "high": 4}})
    with pytest.raises(ConfigError, match="prompt_length=0 with param_budget=400 trains nothing"):
        check_space(dept.RECIPE, fixed | {"param_budget": 400}, {"prompt_length": {"type": "int", "low": 0, "high": 1}})
    with pytest.raises(ConfigError, match="exceeds the 512 positions"):
        check_space(dept.RECIPE, {"model": "minilm", "max_input_length": 500},
                         {"prompt_length": {"type": "int", "low": 0, "high": 20}})
    with pytest.raises(ConfigError, match="lr_prompt=0.0 must be above 0"):
        check_space(dept.RECIPE, fixed, {"lr_prompt": {"type": "categorical", "values": [0.3, 0.0]}})
    with pytest.raises(ConfigError, match="fixed.eval_data: .*does not exist"):
        check_space(dept.RECIPE, fixed | {"eval_data": "no/such/folder"}, {})


def test_check_space_makes_data_paths_absolute(tmp_path, monkeypatch):
    save_stepgame(generate(1, 2, seed=0), tmp_path / "data" / "qa1_valid.json")
    monkeypatch.chdir(tmp_path)
    fixed = {"model": "tiny:bert", "eval_data": "data"}
    check_space(dept.RECIPE, fixed, {})
    assert fixed["eval_data"] == str(tmp_path / "data")


def test_validate_space_reports_budget_errors_with_the_file():
    from raypost.tune.space import validate_space

    raw = {"method": "dept", "fixed": {"model": "tiny:bert", "param_budget": 320},
           "search": {"prompt_length": {"type": "int", "low": 1, "high": 20}}}
    with pytest.raises(ConfigError, match=r"my.yaml: prompt_length=20 does not fit param_budget=320.*d=32"):
        validate_space(raw, "dept", source="my.yaml")


# ---- MiniLM, once -----------------------------------------------------------------------------
def test_minilm_classifier():
    cfg = flat("minilm", prompt_length=4, lowrank_rank=None, param_budget=15360, max_input_length=96,
               train_k="1-3", train_per_k=4, eval_k="1-3", eval_per_k=2, lr_head=1e-2)
    setup = dept.setup(cfg, 0, 1)
    p = setup.params
    assert (p["dept_kind"], p["dept_d"], p["dept_m"]) == ("classifier", 384, 4)
    assert p["dept_r"] == (15360 - 4 * 384) // (96 + 384) and p["dept_trainable_params"] <= 15360
    assert p["trainable_params"] == p["dept_trainable_params"] + 384 * 9 + 9 and p["train_truncated"] == 0
    optimizer = torch.optim.AdamW(setup.param_groups)
    batch = next(setup.train_batches)
    before = fixed_batch_loss(setup, batch)
    for _ in range(3):
        optimizer.zero_grad()
        setup.compute_loss(setup.model, batch).backward()
        optimizer.step()
    assert fixed_batch_loss(setup, batch) < before
    metrics = setup.evaluate(setup.model)
    assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["eval_loss"] > 0
