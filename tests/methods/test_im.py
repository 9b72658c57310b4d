"""Instruction Modelling: the weighted loss, exact template spans, data errors, trainable parts."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from raypost.errors import ConfigError, DataError
from raypost.methods.im import (
    INSTRUCTION,
    OUTPUT,
    TEMPLATE,
    ImConfig,
    collate,
    encode_example,
    example_from_row,
    im_loss,
    load_instruction_jsonl,
    make_trainable,
    output_only_loss,
    weighted_lm_loss,
)
from raypost.models import load_base, tiny_tokenizer
from raypost.recipes.train_config import TrainConfig

T, I, O, PAD = TEMPLATE, INSTRUCTION, OUTPUT, -1


# ---- the loss on a hand-made batch -----------------------------------------------------------

@pytest.fixture
def batch():
    """Two rows of segments (PAD = padding), random logits and labels over a 7-token vocabulary."""
    g = torch.Generator().manual_seed(0)
    segments = torch.tensor([[T, T, I, I, I, T, T, O, O, O],
                             [T, I, I, T, O, O, PAD, PAD, PAD, PAD]])
    labels = torch.randint(0, 7, segments.shape, generator=g).masked_fill(segments == PAD, -100)
    logits = torch.randn(*segments.shape, 7, generator=g)
    return segments, labels, logits


def _encode_rows(examples, tokenizer, chat_template="paper", max_seq_length=None):
    return [encode_example(e, tokenizer, chat_template, max_seq_length) for e in examples]


def weights(segments, lam):
    return (segments == O).float() + lam * (segments == I).float()


def ce_on(logits, labels, segments, keep):
    """Independent reference: mean F.cross_entropy over the (shifted) positions whose target is in ``keep``."""
    sel = torch.isin(segments[:, 1:], torch.tensor(keep))
    return F.cross_entropy(logits[:, :-1][sel], labels[:, 1:][sel])


def test_lambda_0_is_output_only_cross_entropy(batch):
    segments, labels, logits = batch
    loss = weighted_lm_loss(logits, labels, weights(segments, 0.0))
    assert torch.allclose(loss, ce_on(logits, labels, segments, [O]))


def test_lambda_1_is_cross_entropy_over_all_non_template_tokens(batch):
    segments, labels, logits = batch
    loss = weighted_lm_loss(logits, labels, weights(segments, 1.0))
    assert torch.allclose(loss, ce_on(logits, labels, segments, [I, O]))


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_template_tokens_never_contribute(batch, lam):
    segments, labels, logits = batch
    changed = logits.clone()
    changed[:, :-1][segments[:, 1:] == T] = 100 * torch.randn_like(changed[:, :-1][segments[:, 1:] == T])
    w = weights(segments, lam)
    assert torch.equal(weighted_lm_loss(logits, labels, w), weighted_lm_loss(changed, labels, w))


def test_intermediate_lambda_is_token_weighted_mean(batch):
    """loss(lam) = (N_O * L_O + lam * N_I * L_I) / (N_O + lam * N_I), as docs/im.md states."""
    segments, labels, logits = batch
    n_o, n_i = int((segments[:, 1:] == O).sum()), int((segments[:, 1:] == I).sum())
    l_o, l_i = ce_on(logits, labels, segments, [O]), ce_on(logits, labels, segments, [I])
    for lam in (0.25, 0.5, 0.9):
        expected = (n_o * l_o + lam * n_i * l_i) / (n_o + lam * n_i)
        assert torch.allclose(weighted_lm_loss(logits, labels, weights(segments, lam)), expected)


# ---- template spans from real tokenisation ---------------------------------------------------

def toks(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def span(enc, segment):
    return [t for t, s in zip(enc.input_ids, enc.segments) if s == segment]


def test_paper_template_spans_are_exact():
    tok = tiny_tokenizer()
    ex = example_from_row({"instruction": "Where is A?", "input": "A is left of B.", "output": "left"}, "r:1")
    enc = encode_example(ex, tok)
    assert tok.decode(enc.input_ids) == "<|user|>\nWhere is A?\n\nA is left of B.\n<|assistant|>\nleft</s>"
    assert span(enc, T) == toks(tok, "<|user|>\n") + toks(tok, "\n<|assistant|>\n")
    assert span(enc, I) == toks(tok, "Where is A?\n\nA is left of B.")
    assert span(enc, O) == toks(tok, "left") + [tok.eos_token_id]
    # contiguous runs: template, instruction, template, output
    runs = [s for i, s in enumerate(enc.segments) if i == 0 or s != enc.segments[i - 1]]
    assert runs == [T, I, T, O]


def test_multi_turn_spans():
    tok = tiny_tokenizer()
    ex = example_from_row({"messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": "Hello"},
                                        {"role": "user", "content": "Bye"},
                                        {"role": "assistant", "content": "Bye!"}]}, "r:1")
    enc = encode_example(ex, tok)
    tags = ["<|system|>\n", "\n<|user|>\n", "\n<|assistant|>\n", "\n<|user|>\n", "\n<|assistant|>\n"]
    assert span(enc, T) == sum((toks(tok, t) for t in tags), [])
    assert span(enc, I) == toks(tok, "Be brief.") + toks(tok, "Hi") + toks(tok, "Bye")
    assert span(enc, O) == toks(tok, "Hello") + [tok.eos_token_id] + toks(tok, "Bye!") + [tok.eos_token_id]


def test_tokenizer_chat_template_spans():
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
                         "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}|{% endfor %}")
    ex = example_from_row({"instruction": "Say hi", "output": "hi"}, "r:1")
    enc = encode_example(ex, tok, chat_template="tokenizer")
    assert span(enc, I) == toks(tok, "Say hi")
    assert span(enc, O) == toks(tok, "hi") + [tok.eos_token_id]  # the template's </s> is trained as output
    assert span(enc, T) == toks(tok, "[user] ") + toks(tok, "|[assistant] ") + toks(tok, "|")
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}|{% endfor %}"
    enc = encode_example(ex, tok, chat_template="tokenizer")  # no end token in the template: EOS is added
    assert span(enc, O) == toks(tok, "hi") + [tok.eos_token_id]


def test_collate_pads_right_and_masks_template():
    tok = tiny_tokenizer()
    rows = _encode_rows([example_from_row({"instruction": "a", "output": "b"}, "r:1"),
                        example_from_row({"instruction": "longer one", "output": "ccc"}, "r:2")], tok)
    b = collate(rows, tok.pad_token_id, instruction_weight=0.5)
    n0 = len(rows[0].input_ids)
    assert b["input_ids"].shape == b["labels"].shape == b["loss_weights"].shape == (2, len(rows[1].input_ids))
    assert b["attention_mask"][0].tolist() == [1] * n0 + [0] * (b["input_ids"].shape[1] - n0)
    assert (b["input_ids"][0, n0:] == tok.pad_token_id).all() and (b["labels"][0, n0:] == -100).all()
    seg = torch.tensor(rows[1].segments)
    assert b["loss_weights"][1].tolist() == [{T: 0.0, I: 0.5, O: 1.0}[s] for s in seg.tolist()]
    assert (b["labels"][1][seg == T] == -100).all()


def test_truncation_drops_oldest_tokens_never_output():
    tok = tiny_tokenizer()
    ex = example_from_row({"instruction": "x" * 50, "output": "answer"}, "train.jsonl:7")
    full = encode_example(ex, tok)
    cut = encode_example(ex, tok, max_seq_length=30)
    assert len(cut.input_ids) == 30 and cut.input_ids == full.input_ids[-30:]
    assert span(cut, O) == span(full, O)
    with pytest.raises(DataError, match=r"train.jsonl:7: .* max_seq_length=5 .* output part"):
        encode_example(ex, tok, max_seq_length=5)


# ---- data errors ------------------------------------------------------------------------------

def write(tmp_path, lines):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_loads_both_row_formats(tmp_path):
    path = write(tmp_path, [json.dumps({"instruction": "i", "input": "x", "output": "o"}), "",
                            json.dumps({"messages": [{"role": "user", "content": "u"},
                                                     {"role": "assistant", "content": "a"}]})])
    rows = load_instruction_jsonl(path)
    assert [r.messages for r in rows] == [(("user", "i\n\nx"), ("assistant", "o")),
                                          (("user", "u"), ("assistant", "a"))]
    assert rows[1].source == "train.jsonl:3"


def test_row_without_output_names_file_and_line(tmp_path):
    path = write(tmp_path, [json.dumps({"instruction": "i", "output": "o"}), json.dumps({"instruction": "i"})])
    with pytest.raises(DataError, match=r"train.jsonl:2: row has no 'output'"):
        load_instruction_jsonl(path)


def test_chat_row_without_assistant_names_line(tmp_path):
    path = write(tmp_path, [json.dumps({"messages": [{"role": "user", "content": "u"}]})])
    with pytest.raises(DataError, match=r"train.jsonl:1: row has no non-empty assistant message"):
        load_instruction_jsonl(path)


def test_empty_file_and_bad_json(tmp_path):
    with pytest.raises(DataError, match=r"train.jsonl' is empty"):
        load_instruction_jsonl(write(tmp_path, ["", "  "]))
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid JSON"):
        load_instruction_jsonl(write(tmp_path, [json.dumps({"instruction": "i", "output": "o"}), "{oops"]))
    with pytest.raises(DataError, match="does not exist"):
        load_instruction_jsonl(tmp_path / "missing.jsonl")


# ---- trainable parts and the loss on real models ----------------------------------------------

@pytest.mark.parametrize("name,kind", [("tiny:gpt2", "causal"), ("tiny:llama", "causal"), ("tiny:t5", "seq2seq")])
def test_lora_trains_only_lora_params(name, kind):
    base = load_base(name, kind)
    model, groups = make_trainable(base, ImConfig(trainable="lora", lr=3e-4,
                                                  instruction_weight=1.0 if kind == "causal" else 0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert groups == [{"name": "lora", "params": groups[0]["params"], "lr": 3e-4}]
    assert sum(p.numel() for p in groups[0]["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_im_loss_on_gpt2_and_heldout_output_loss():
    base = load_base("tiny:gpt2", "causal")
    model, groups = make_trainable(base, ImConfig(trainable="full"))
    assert groups[0]["name"] == "full" and all(p.requires_grad for p in model.parameters())
    rows = _encode_rows([example_from_row({"instruction": "Where is A?", "output": "left"}, "r:1"),
                        example_from_row({"instruction": "Where is B?", "output": "above"}, "r:2")], base.tokenizer)
    pad = base.tokenizer.pad_token_id
    model.eval()
    output_only = im_loss(model, collate(rows, pad, 0.0))
    assert output_only.item() == pytest.approx(output_only_loss(model, rows, pad, batch_size=1), rel=1e-5)
    im_loss(model, collate(rows, pad, 1.0)).backward()
    assert model.transformer.wte.weight.grad is not None


def test_seq2seq_reads_prompt_in_encoder_and_rejects_instruction_weight():
    base = load_base("tiny:t5", "seq2seq")
    rows = _encode_rows([example_from_row({"instruction": "Where is A?", "output": "left"}, "r:1")], base.tokenizer)
    b = collate(rows, base.tokenizer.pad_token_id, 0.0, kind="seq2seq")
    assert b["labels"][0].tolist() == toks(base.tokenizer, "left") + [base.tokenizer.eos_token_id]
    assert torch.isfinite(im_loss(base.model, b, kind="seq2seq"))
    with pytest.raises(ConfigError, match="instruction_weight=1.0 needs a causal LM"):
        make_trainable(base, ImConfig(instruction_weight=1.0))


def test_dept_trainable_trains_prompt_and_lowrank_with_their_own_rates():
    from raypost.methods.dept import DeptConfig

    base = load_base("tiny:gpt2", "causal")
    dept = DeptConfig(prompt_length=4, lowrank_rank=2, max_input_length=128)
    model, groups = make_trainable(base, ImConfig(trainable="dept", max_seq_length=128), dept)
    assert {g["name"]: g["lr"] for g in groups} == {"prompt": dept.lr_prompt, "lowrank": dept.lr_lowrank}
    rows = _encode_rows([example_from_row({"instruction": "Where is A?", "output": "left"}, "r:1")], base.tokenizer)
    im_loss(model, collate(rows, base.tokenizer.pad_token_id, 1.0)).backward()  # prompt logits are sliced off
    assert model.prompt.grad is not None and not any(p.requires_grad for p in base.model.parameters())
    with pytest.raises(ConfigError, match="max_seq_length=512 exceeds DePT's max_input_length=128"):
        make_trainable(base, ImConfig(trainable="dept"), dept)


def test_config_validation_and_dept_needs_its_config():
    with pytest.raises(ConfigError, match="instruction_weight=1.5 is above its maximum 1.0"):
        ImConfig(instruction_weight=1.5)
    with pytest.raises(ConfigError, match="trainable='adapter' is not one of full, lora, dept"):
        ImConfig(trainable="adapter")
    with pytest.raises(ConfigError, match="trainable='dept' needs a DePT config"):
        make_trainable(load_base("tiny:gpt2", "causal"), ImConfig(trainable="dept"))


def test_field_names_are_unique_across_config_classes():
    """A trial config is one flat dict (and the MLflow params): no name may mean two things."""
    from raypost.methods.dept import DeptConfig
    from raypost.methods.im import ImConfig
    from raypost.methods.pcp import PcpConfig

    names = {f.name for f in dataclasses.fields(ImConfig)}
    for other in {ImConfig, PcpConfig, DeptConfig, TrainConfig} - {ImConfig}:
        assert not names & {f.name for f in dataclasses.fields(other)}, other
    assert all(f.metadata["help"] for f in dataclasses.fields(ImConfig))
