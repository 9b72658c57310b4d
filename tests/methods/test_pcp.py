"""PCP: templates and verbalizers, stage 1 (MLM on templated texts), stage 2 (label-word logits)."""

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

from raypost.distributed import sharded_adamw
from raypost.errors import ConfigError
from raypost.methods.pcp import (
    STEPGAME_LABELS,
    PcpConfig,
    PromptMLMClassifier,
    PromptTemplate,
    Verbalizer,
    load_mlm,
    make_verbalizer,
    mlm_batches,
    mlm_loss,
    pcp_texts,
)
from raypost.models import load_base, tiny_tokenizer
from raypost.recipes.train_config import TrainConfig

TEMPLATE = PromptTemplate("{text} Answer: {mask}.")
ROWS = [{"text": "A is to the left of B. Where is A relative to B?"},
        {"text": "C sits above D. Where is C relative to D?"},
        {"text": "E and F overlap. Where is E?"},
        {"text": "G is lower-right of H. Where is G?"}]
LABELS = ["left", "above", "overlap", "lower-right"]


def encode(clf: PromptMLMClassifier, rows, labels=None) -> dict:
    """A batch of templated rows, as the PCP recipe builds them (mask positions recorded)."""
    encoded = [clf.template.encode(r, clf.tokenizer, clf.tokenizer.mask_token_id, clf.max_prompt_length) for r in rows]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(rows), width), clf.tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, (ids, _) in enumerate(encoded):
        input_ids[i, :len(ids)], attention_mask[i, :len(ids)] = torch.tensor(ids), 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "mask_positions": torch.tensor([pos for _, pos in encoded])}
    if labels is not None:
        batch["labels"] = torch.tensor([clf.verbalizer.index(label) for label in labels])
    return batch


def test_stage1_lowers_mlm_loss_on_templated_texts():
    base = load_base("tiny:bert", "masked_lm", seed=0)
    texts = pcp_texts(TEMPLATE, ROWS, base.tokenizer)
    held = next(mlm_batches(texts, base.tokenizer, batch_size=4, mask_prob=0.3, seed=123))
    base.model.eval()
    with torch.no_grad():
        before = mlm_loss(base.model, held).item()
    torch.manual_seed(0)
    batches = mlm_batches(texts, base.tokenizer, batch_size=4, mask_prob=0.15, seed=0)
    losses = sharded_adamw(base.model, lambda b: mlm_loss(base.model, b), batches, steps=25, lr=3e-3,
                           weight_decay=0.0, max_grad_norm=0.0, world_size=1, device=torch.device("cpu"))
    base.model.eval()
    with torch.no_grad():
        after = mlm_loss(base.model, held).item()
    assert len(losses) == 25
    assert after < before - 1.0, (before, after)  # from ~ln(384) = 5.95 down by more than a nat


def test_stage1_texts_put_mask_or_pseudo_label_in_the_slot():
    tok = tiny_tokenizer()
    verbalizer = make_verbalizer("stepgame", tok)
    plain = pcp_texts(TEMPLATE, ROWS[:1], tok)[0]
    assert tok.decode(plain) == ROWS[0]["text"] + " Answer: <extra_id_0>.</s>"
    labelled = pcp_texts(TEMPLATE, ROWS[:1], tok, verbalizer=verbalizer, pseudo_labels=["left"])[0]
    assert tok.decode(labelled) == ROWS[0]["text"] + " Answer: 4.</s>"
    batch = next(mlm_batches([plain], tok, batch_size=1, mask_prob=0.99, seed=0))
    assert batch["labels"][0, plain.index(tok.mask_token_id)] == -100  # the slot's [MASK] is never a target


def test_stage2_logits_are_label_word_logits_at_the_mask():
    base = load_base("tiny:bert", "masked_lm", seed=1)
    clf = PromptMLMClassifier(base.model, base.tokenizer, TEMPLATE, "stepgame").eval()
    batch = encode(clf, ROWS, LABELS)
    rows = torch.arange(len(ROWS))
    assert (batch["input_ids"][rows, batch["mask_positions"]] == base.tokenizer.mask_token_id).all()
    out = clf(**batch)
    with torch.no_grad():
        raw = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    word_ids = torch.tensor([base.tokenizer.convert_tokens_to_ids(w) for w in "468279135"])
    assert out.logits.shape == (4, len(STEPGAME_LABELS))
    assert torch.allclose(out.logits, raw[rows, batch["mask_positions"]][:, word_ids], atol=1e-5)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]))
    # mask positions found from the input ids give the same logits
    same = clf(batch["input_ids"], batch["attention_mask"]).logits
    assert torch.allclose(same, out.logits)


def test_stage2_fine_tuning_fits_the_labels():
    base = load_base("tiny:bert", "masked_lm", seed=0)
    clf = PromptMLMClassifier(base.model, base.tokenizer, TEMPLATE)
    batch = encode(clf, ROWS, LABELS)
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = None
    for _ in range(15):
        loss = clf(**batch).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 2


def test_template_truncation_cuts_text_never_the_mask():
    tok = tiny_tokenizer()
    ids, pos = TEMPLATE.encode({"text": "x" * 100}, tok, tok.mask_token_id, max_prompt_length=32)
    assert len(ids) == 32 and ids[pos] == tok.mask_token_id
    assert tok.decode(ids) == "x" * 20 + " Answer: <extra_id_0>.</s>"


def test_minilm_fresh_head_is_reported_and_wordpiece_verbalizer_works(caplog):
    with caplog.at_level(logging.WARNING, logger="raypost.methods.pcp.mlm"):
        base = load_mlm("minilm")
    assert "has no masked-LM head in its checkpoint" in caplog.text
    assert "cls.predictions.transform.dense.weight" in caplog.text
    clf = PromptMLMClassifier(base.model, base.tokenizer, TEMPLATE, "stepgame").eval()
    assert clf.verbalizer.words == ["left", "right", "above", "below", "northwest", "northeast", "southwest",
                                    "southeast", "overlap"]
    batch = encode(clf, ROWS[:2])
    assert base.tokenizer.decode(batch["input_ids"][0]).startswith("[CLS] a is to the left of b.")
    with torch.no_grad():
        raw = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ids = torch.tensor(clf.verbalizer.word_ids)
    assert torch.allclose(clf(**batch).logits, raw[torch.arange(2), batch["mask_positions"]][:, ids], atol=1e-4)


def test_tiny_model_has_no_fresh_head_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="raypost.methods.pcp.mlm"):
        load_mlm("tiny:bert")
    assert "masked-LM head" not in caplog.text


# ---- bad input --------------------------------------------------------------------------------

def test_template_without_mask_slot_names_the_template():
    with pytest.raises(ConfigError, match=r"template '\{text\} Answer:' needs exactly one \{mask\} slot"):
        PromptTemplate("{text} Answer:")
    with pytest.raises(ConfigError, match="found 2"):
        PromptTemplate("{mask} {text} {mask}")
    with pytest.raises(ConfigError, match=r"template '\{text\}' needs exactly one \{mask\} slot"):
        PcpConfig(template="{text}")


def test_multi_token_label_word_names_the_word():
    with pytest.raises(ConfigError, match=r"label word 'left' \(label 'left'\) is not a single token .*"
                                          r"tokenises to \['l', 'e', 'f', 't'\]"):
        Verbalizer({"left": "left", "right": "r"}, tiny_tokenizer())
    from transformers import AutoTokenizer

    from raypost.models import minilm_path

    wordpiece = AutoTokenizer.from_pretrained(str(minilm_path()))
    with pytest.raises(ConfigError, match=r"label word 'upper-left' .* tokenises to \['upper', '-', 'left'\]"):
        make_verbalizer("left:left,upper-left:upper-left", wordpiece)
    with pytest.raises(ConfigError, match=r"label word 'zyzzyvaqx' .* tokenises to"):
        Verbalizer({"a": "zyzzyvaqx"}, wordpiece)


def test_config_validation():
    with pytest.raises(ConfigError, match="verbalizer='left=l' must be 'stepgame' or 'label:word"):
        PcpConfig(verbalizer="left=l")
    with pytest.raises(ConfigError, match="mask_prob=1.5"):
        PcpConfig(mask_prob=1.5)
    assert make_verbalizer(PcpConfig(verbalizer="yes:y,no:n").verbalizer, tiny_tokenizer()).labels == ["yes", "no"]
    with pytest.raises(ConfigError, match=r"^pseudo_label_steps=-1 is below its minimum 0$"):
        PcpConfig(pseudo_label_steps=-1)
    with pytest.raises(ConfigError, match=r"^pseudo_label_steps=5 needs cpt_steps > 0 .*cpt_steps=0 skips stage 1"):
        PcpConfig(pseudo_label_steps=5, cpt_steps=0)
    assert PcpConfig(pseudo_label_steps=5, cpt_steps=1).pseudo_label_steps == 5


def test_field_names_are_unique_across_config_classes():
    """A trial config is one flat dict (and the MLflow params): no name may mean two things."""
    from raypost.methods.dept import DeptConfig
    from raypost.methods.im import ImConfig
    from raypost.methods.pcp import PcpConfig

    names = {f.name for f in dataclasses.fields(PcpConfig)}
    for other in {ImConfig, PcpConfig, DeptConfig, TrainConfig} - {PcpConfig}:
        assert not names & {f.name for f in dataclasses.fields(other)}, other
    assert all(f.metadata["help"] for f in dataclasses.fields(PcpConfig))
