"""DeptModel on tiny config-built models (all kinds) and the pretrained MiniLM.

PEFT's own ``PromptTuning`` is the reference: DePT with r = 0, or at its initial state (B = 0),
must give exactly PEFT's logits and loss when both hold the same prompt.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from peft import PromptTuningConfig, TaskType, get_peft_model
from peft.tuners.prompt_tuning import PromptEmbedding
from safetensors.torch import load_file

from raypost.errors import ConfigError, DataError
from raypost.methods.dept import DeptConfig, DeptModel, dept_param_count
from raypost.models import load_base, minilm_path

TINY = {"classifier": "tiny:bert", "masked_lm": "tiny:bert", "causal": "tiny:gpt2", "seq2seq": "tiny:t5"}
KINDS = ("classifier", "causal", "seq2seq")
PEFT_TASKS = {"classifier": TaskType.SEQ_CLS, "causal": TaskType.CAUSAL_LM, "seq2seq": TaskType.SEQ_2_SEQ_LM}
TEXTS = ["the circle is left of the box", "above"]  # different lengths: right padding is exercised
M, S = 4, 32


def tiny(kind, name=None):
    return load_base(name or TINY[kind], kind, num_labels=3 if kind == "classifier" else None)


def dept(base, **kwargs):
    cfg = dict(prompt_length=M, lowrank_rank=3, max_input_length=S) | kwargs
    return DeptModel(base, DeptConfig(**cfg)).eval()  # eval: no dropout, so outputs compare exactly


def batch(base, texts=TEXTS):
    enc = base.tokenizer(texts, padding=True, return_tensors="pt")
    if base.kind == "classifier":
        labels = torch.arange(len(texts)) % 3
    else:
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    return dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels)


def move_off_zero(model):
    """B = 0 makes the offset vanish; give it values so tests see the offset at work."""
    with torch.no_grad():
        model.lowrank_B.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    return model


def train_and_check_frozen(model, base, data, steps=3):
    """A few AdamW steps with DePT's groups: base weights bit-identical, no base grads, adapter moved."""
    head = {id(p) for _, module in model.head_modules() for p in module.parameters()}
    frozen = {n: p.detach().clone() for n, p in base.model.named_parameters() if id(p) not in head}
    before = {n: t.detach().clone() for n, t in model.adapter_tensors().items()}
    optimizer = torch.optim.AdamW(model.param_groups())
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**data).loss.backward()
        optimizer.step()
    model.eval()
    for name, p in base.model.named_parameters():
        if id(p) not in head:
            assert p.grad is None and torch.equal(p, frozen[name]), name
    after = model.adapter_tensors()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved == set(before)  # P, A, B and every head tensor changed


# ---- parameter count and groups ------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m, r", [(M, 3), (0, 3), (M, 0)])  # DePT, pure low-rank, vanilla prompt tuning
def test_param_count_groups_and_degenerate_splits(kind, m, r):
    base = tiny(kind)
    model = dept(base, prompt_length=m, lowrank_rank=r)
    trainable = [p for p in model.parameters() if p.requires_grad]
    expected = m * base.hidden_size + r * (S + base.hidden_size)
    assert model.trainable_parameter_count() == expected == dept_param_count(m, r, S, base.hidden_size)
    assert sum(p.numel() for p in trainable) == expected + model.head_parameter_count()
    assert all(p.numel() > 0 for p in trainable)  # no zero-size parameters for m = 0 or r = 0
    groups = model.param_groups()
    names = [g["name"] for g in groups]
    assert names == [n for n, on in [("prompt", m), ("lowrank", r), ("head", kind == "classifier")] if on]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in trainable)
    model(**batch(base)).loss.backward()  # both degenerate splits run forward and backward


# ---- PEFT's PromptTuning is the reference ----------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rank", [0, 3])  # r = 0: vanilla prompt tuning; r = 3: the initial state, B = 0
def test_equals_peft_prompt_tuning(kind, rank):
    base = tiny(kind)
    model = dept(base, lowrank_rank=rank, readout="pooler" if kind == "classifier" else "auto")
    config = PromptTuningConfig(task_type=PEFT_TASKS[kind], num_virtual_tokens=M, num_transformer_submodules=1)
    reference = get_peft_model(tiny(kind).model, config).eval()  # an identical, separate base
    with torch.no_grad():
        reference.prompt_encoder["default"].embedding.weight.copy_(model.prompt)
    data = batch(base)
    ours, theirs = model(**data), reference(**data)
    assert torch.equal(ours.logits, theirs.logits)  # causal: PEFT pads labels with -100 as we do
    assert torch.equal(ours.loss, theirs.loss)


# ---- read-out modes of an encoder classifier ---------------------------------------------------
def embeddings_with_prompt_at(model, base, data, at):
    """[x_0..x_{at-1} ; P ; x_at..] built by hand (B = 0: no offset yet), and the matching mask."""
    emb = base.model.get_input_embeddings()(data["input_ids"])
    prompt = model.prompt.expand(emb.shape[0], -1, -1)
    mask = data["attention_mask"]
    ones = mask.new_ones(mask.shape[0], M)
    return (torch.cat([emb[:, :at], prompt, emb[:, at:]], 1),
            torch.cat([mask[:, :at], ones, mask[:, at:]], 1))


def test_readout_cls_puts_the_prompt_after_cls_so_the_pooler_reads_cls():
    base = tiny("classifier")
    model = dept(base, readout="cls")
    data = batch(base)
    embeds, mask = embeddings_with_prompt_at(model, base, data, at=1)
    with torch.no_grad():
        expected = base.model(inputs_embeds=embeds, attention_mask=mask).logits
        ours = model(**data)
    assert torch.allclose(ours.logits, expected, atol=1e-6)
    assert torch.allclose(ours.loss, F.cross_entropy(expected, data["labels"]), atol=1e-6)
    pooler = dept(base, readout="pooler")(**data).logits  # PEFT's way reads the first prompt vector instead
    assert not torch.allclose(pooler, ours.logits)


def test_readout_mean_averages_the_real_tokens_only():
    base = tiny("classifier")
    model = dept(base, readout="mean")
    data = batch(base)  # the second text is padded
    embeds, mask = embeddings_with_prompt_at(model, base, data, at=0)
    with torch.no_grad():
        hidden = base.model.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, M:]
        real = data["attention_mask"].unsqueeze(-1).float()
        expected = base.model.classifier((hidden * real).sum(1) / real.sum(1))
        ours = model(**data).logits
        alone = model(**batch(base, TEXTS[1:])).logits  # the padded row without its padding
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.allclose(ours[1], alone[0], atol=1e-5)  # pads never reach the mean


def test_readout_cls_pooler_trains_and_saves_the_pooler(tmp_path):
    base = tiny("classifier")
    model = dept(base, readout="cls_pooler")
    pooler = base.model.base_model.pooler
    d = base.hidden_size
    assert all(p.requires_grad for p in pooler.parameters())
    assert model.head_parameter_count() == (d * 3 + 3) + (d * d + d)  # head + pooler
    head_group = next(g for g in model.param_groups() if g["name"] == "head")
    assert {id(p) for p in pooler.parameters()} <= {id(p) for p in head_group["params"]}
    data = batch(base)
    train_and_check_frozen(model, base, data, steps=2)
    expected = model(**data).logits
    model.save_adapter(tmp_path)
    loaded = DeptModel.load_adapter(tiny("classifier"), tmp_path).eval()
    assert loaded.readout == "cls_pooler" and torch.equal(loaded(**data).logits, expected)


@pytest.mark.parametrize("readout", ["pooler", "cls", "mean", "cls_pooler"])
def test_a_classifier_readout_on_a_generative_model_is_refused(readout):
    with pytest.raises(ConfigError, match=f"readout='{readout}' is how an encoder classifier reads its input; "
                                          "model 'tiny:gpt2' is causal"):
        dept(tiny("causal"), readout=readout)
    assert dept(tiny("causal")).readout is None and dept(tiny("classifier")).readout == "mean"


def test_offset_changes_the_output_once_b_moves():
    base = tiny("classifier")
    model = dept(base)
    data = batch(base)
    start = model(**data).logits
    assert not torch.equal(move_off_zero(model)(**data).logits, start)


# ---- training leaves the base untouched ------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_training_changes_only_prompt_lowrank_and_head(kind):
    base = tiny(kind)
    train_and_check_frozen(dept(base), base, batch(base))


# ---- save / load -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_exact(kind, tmp_path):
    base = tiny(kind)
    model = dept(base)
    data = batch(base)
    train_and_check_frozen(model, base, data, steps=2)
    expected = model(**data).logits
    model.save_adapter(tmp_path)

    saved = load_file(tmp_path / "adapter.safetensors")
    head = {"head.weight", "head.bias"} if kind == "classifier" else set()
    assert set(saved) == {"prompt", "lowrank_A", "lowrank_B"} | head  # never the base model
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["base_model"] == TINY[kind] and meta["kind"] == kind and meta["hidden_size"] == 32
    assert meta["num_labels"] == (3 if kind == "classifier" else None)
    assert meta["config"]["prompt_length"] == M and meta["dept_trainable_params"] == model.trainable_parameter_count()

    loaded = DeptModel.load_adapter(tiny(kind), tmp_path).eval()  # a fresh base of the same name
    assert torch.equal(loaded(**data).logits, expected)


# ---- the offset's positions ------------------------------------------------------------------
def test_padding_to_s_equals_the_unpadded_input():
    """The paper pads every input to s and adds all s rows; we add the first L. Same output."""
    base = tiny("classifier")
    model = move_off_zero(dept(base, max_input_length=16))
    alone = base.tokenizer(["above"], return_tensors="pt")
    padded = base.tokenizer(["above"], padding="max_length", max_length=16, return_tensors="pt")
    torch.testing.assert_close(model(**alone).logits, model(**padded).logits)


def test_offset_rows_follow_real_tokens_under_left_padding():
    base = tiny("causal")
    model = move_off_zero(dept(base))
    ids = base.tokenizer(["above"], return_tensors="pt").input_ids
    left = torch.cat([torch.full((1, 3), base.tokenizer.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    padded_embeds, _ = model._embed(left, mask)
    alone_embeds, _ = model._embed(ids, None)
    assert torch.equal(padded_embeds[:, M + 3:], alone_embeds[:, M:])


def test_masked_lm_logits_include_prompt_positions():
    base = tiny("masked_lm")
    model = dept(base)
    data = batch(base)
    out = model(**data)
    assert out.logits.shape[1] == M + data["input_ids"].shape[1]
    expected = F.cross_entropy(out.logits[:, M:].flatten(0, 1), data["labels"].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)  # prompt slots carry label -100


# ---- generation ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny:gpt2", "tiny:llama"])
def test_causal_generate_equals_greedy_forward(name):
    """Generated tokens get their offset rows too, as in teacher-forced training."""
    base = load_base(name, "causal")
    model = move_off_zero(dept(base))
    ids = base.tokenizer(["left of"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    seq = ids
    for _ in range(4):
        seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq[:, ids.shape[1]:])


def test_left_padded_batch_generates_what_each_row_generates_alone():
    base = load_base("tiny:llama", "causal")
    base.tokenizer.padding_side = "left"  # batched causal generation pads on the left
    model = move_off_zero(dept(base))
    texts = ["left of the box", "above"]
    enc = base.tokenizer(texts, padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    together = model.generate(enc.input_ids, enc.attention_mask, **kwargs)
    for row, text in enumerate(texts):
        alone = model.generate(base.tokenizer([text], return_tensors="pt").input_ids, **kwargs)
        assert torch.equal(together[row:row + 1], alone), text


def test_seq2seq_generate_equals_greedy_forward():
    base = tiny("seq2seq")
    model = move_off_zero(dept(base))
    enc = base.tokenizer(TEXTS, padding=True, return_tensors="pt")
    out = model.generate(enc.input_ids, enc.attention_mask, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    dec = torch.full((2, 1), base.model.config.decoder_start_token_id)
    for _ in range(4):
        logits = model(enc.input_ids, enc.attention_mask, decoder_input_ids=dec).logits
        dec = torch.cat([dec, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, dec)


# ---- the pretrained MiniLM encoder -----------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return load_base("minilm", "classifier", num_labels=9)


def test_minilm_budget_text_init_and_frozen_training(minilm):
    d, m, s, r = minilm.hidden_size, 10, 64, 5
    budget = dept_param_count(m, r, s, d) + 100  # not an exact division: r rounds down
    text = "Where is the circle relative to the square?"
    model = DeptModel(minilm, DeptConfig(prompt_length=m, param_budget=budget, max_input_length=s,
                                         prompt_init="text", prompt_init_text=text))
    assert (d, model.rank, model.trainable_parameter_count()) == (384, r, budget - 100)

    peft_config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=m, token_dim=d,
                                     num_transformer_submodules=1, prompt_tuning_init="TEXT",
                                     prompt_tuning_init_text=text, tokenizer_name_or_path=str(minilm_path()))
    reference = PromptEmbedding(peft_config, minilm.model.get_input_embeddings()).embedding.weight
    assert torch.equal(model.prompt, reference)  # same text init as PEFT

    enc = minilm.tokenizer(["the box is above the circle", "left"], padding=True, return_tensors="pt")
    data = dict(enc, labels=torch.tensor([2, 7]))
    train_and_check_frozen(model, minilm, data)


# ---- bad input: one clear line naming the value and the limit --------------------------------
def test_input_longer_than_s():
    base = tiny("classifier")
    model = dept(base, max_input_length=8)
    enc = base.tokenizer(["left of the box"], return_tensors="pt")  # 16 bytes
    with pytest.raises(DataError, match=r"input length 16 exceeds max_input_length=8"):
        model(**enc)


def test_budget_that_no_split_meets():
    with pytest.raises(ConfigError, match=r"param_budget=1000 is below the prompt alone: "
                                          r"prompt_length=100 x hidden size d=32 = 3200"):
        DeptModel(tiny("classifier"), DeptConfig(prompt_length=100, param_budget=1000))


def test_causal_generation_past_s():
    base = tiny("causal")
    model = move_off_zero(dept(base, max_input_length=8))
    ids = base.tokenizer(["abc"], return_tensors="pt").input_ids  # 4 tokens with </s>
    with pytest.raises(DataError, match=r"generation reached input position 8 but max_input_length=8"):
        model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert "prepare_inputs_for_generation" not in vars(model.base)  # the patch is undone


def test_adapter_onto_another_hidden_size(minilm, tmp_path):
    dept(load_base("tiny:bert", "classifier", num_labels=9)).save_adapter(tmp_path)
    with pytest.raises(ConfigError, match=r"trained at hidden size d=32 \('tiny:bert'\), "
                                          r"but base model 'minilm' has d=384"):
        DeptModel.load_adapter(minilm, tmp_path)
