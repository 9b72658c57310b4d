"""The PCP recipe without Ray: setup() in-process (rank 0 of 1) runs stage 1 (MLM on templated
unlabelled StepGame texts) and returns stage 2 (prompt-based fine-tuning) for a torch optimizer;
evaluation checked against an independent one-example-at-a-time count; save/load round trip;
bad templates and verbalizers by name (also via the CLI); MiniLM's missing-head warning."""

import json
import time

import pytest
import torch
import torch.nn.functional as F

from raypost.cli import main
from raypost.errors import ConfigError, DataError
from raypost.inference import load_predictor
from raypost.methods.pcp import PromptTemplate, mlm_batches, mlm_loss, pcp_texts
from raypost.recipes import pcp
from raypost.recipes.base import ADAPTER_META
from raypost.stepgame import LABELS, generate
from raypost.stepgame import task as st
from raypost.tune.space import check_space

N_EVAL = 6
KEYPAD = "468279135"  # the byte tokenizer's default StepGame verbalizer, in LABELS order


def flat(**kw):
    return {"method": "pcp", "model": "tiny:bert", "batch_size": 4, "train_k": "2", "train_per_k": 60,
            "labelled_per_label": 1, "unlabelled_size": 24, "eval_k": "1", "eval_per_k": N_EVAL, "cpt_steps": 12,
            "cpt_lr": 3e-3, "ft_lr": 3e-3, "mask_prob": 0.15, "max_prompt_length": 256, "seed": 0} | kw


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setups():
    """The same trial with and without stage 1 (same seed, so stage 1 is the only difference)."""
    return pcp.setup(flat(), 0, 1), pcp.setup(flat(cpt_steps=0), 0, 1)


def eval_rows():
    return st.load_rows("generate", [1], N_EVAL, noise=False, seed=0, split="eval")


# ---- stage 1 ----------------------------------------------------------------------------------
def test_stage1_lowers_the_mlm_loss_on_held_out_templated_texts(setups):
    with_cpt, without = setups
    tok = with_cpt.model.tokenizer
    texts = pcp_texts(PromptTemplate("{text} Answer: {mask}."), [pcp.template_row(r) for r in eval_rows()], tok)
    held = next(mlm_batches(texts, tok, batch_size=len(texts), mask_prob=0.3, seed=99))
    losses = {}
    for name, setup in (("cpt", with_cpt), ("none", without)):
        setup.model.mlm.eval()
        with torch.no_grad():
            losses[name] = float(mlm_loss(setup.model.mlm, held))
        setup.model.mlm.train()
    assert losses["cpt"] < losses["none"] - 0.5, losses  # random init: ~ln(384) = 5.95
    p = with_cpt.params
    assert [s for s, _ in with_cpt.pre_metrics] == list(range(1, 13))
    assert p["cpt_loss_first"] == with_cpt.pre_metrics[0][1]["cpt_loss"] and p["cpt_texts"] == 24
    assert p["cpt_probe_loss_after"] < p["cpt_probe_loss_before"]
    assert p["cpt_replica_max_diff"] == 0.0  # one worker: trivially in sync
    assert without.pre_metrics == [] and "cpt_loss_first" not in without.params


def test_labelled_and_unlabelled_rows_are_disjoint_and_few():
    pool = generate(2, 60, seed=0)
    labelled, unlabelled = pcp.split_pool(pool, 2, 0, seed=0)
    counts = {lab: sum(r["label"] == lab for r in labelled) for lab in LABELS}
    assert set(counts.values()) == {2}  # k=2 has all nine relations
    key = lambda r: (tuple(r["story"]), r["question"])  # noqa: E731
    assert not {key(r) for r in labelled} & {key(r) for r in unlabelled}
    assert len(labelled) + len(unlabelled) == 60
    with pytest.raises(DataError, match="labelled_per_label=20 but the training pool has .* rows of label"):
        pcp.split_pool(pool, 20, 0, seed=0)
    with pytest.raises(DataError, match="unlabelled_size=100 but only 42 pool rows"):
        pcp.split_pool(pool, 2, 100, seed=0)


# ---- stage 2 ----------------------------------------------------------------------------------
def test_stage2_logits_are_exactly_the_label_words_at_the_mask(setups):
    setup, _ = setups
    batch = next(setup.train_batches)
    clf = setup.model.eval()
    word_ids = [clf.tokenizer.convert_tokens_to_ids(c) for c in KEYPAD]
    assert clf.verbalizer.labels == list(LABELS)
    with torch.no_grad():
        out = clf(**batch)
        vocab = clf.mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows = torch.arange(len(batch["input_ids"]))
    assert (batch["input_ids"][rows, batch["mask_positions"]] == clf.tokenizer.mask_token_id).all()
    assert torch.allclose(out.logits, vocab[rows, batch["mask_positions"]][:, word_ids], atol=1e-5)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]))
    clf.train()


def test_stage2_steps_lower_the_loss_and_train_every_weight(setups):
    setup, _ = setups
    batch = next(setup.train_batches)
    assert setup.params["trainable_params"] == sum(p.numel() for p in setup.model.parameters())
    assert [g["name"] for g in setup.param_groups] == ["all"] and setup.param_groups[0]["lr"] == 3e-3
    assert setup.params["labelled_examples"] == 9 and batch["input_ids"].shape[0] == 4

    def loss():
        setup.model.eval()
        with torch.no_grad():
            value = float(setup.compute_loss(setup.model, batch))
        setup.model.train()
        return value

    before = loss()
    optimizer = torch.optim.AdamW(setup.param_groups)
    for _ in range(5):
        optimizer.zero_grad()
        setup.compute_loss(setup.model, batch).backward()
        optimizer.step()
    assert loss() < before - 0.1


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def one_by_one(clf, rows):
    """Independent: fill the template as text, tokenise it whole, read the label words at the mask."""
    tok, template = clf.tokenizer, PromptTemplate("{text} Answer: {mask}.")
    word_ids = [tok.convert_tokens_to_ids(c) for c in KEYPAD]
    clf.eval()
    preds = []
    for row in rows:
        ids = tok(template.fill(pcp.template_row(row), tok.mask_token))["input_ids"]
        logits = clf.mlm(input_ids=torch.tensor([ids])).logits[0, ids.index(tok.mask_token_id)]
        preds.append(LABELS[int(logits[word_ids].argmax())])
    clf.train()
    return preds


def test_evaluate_matches_an_independent_count(setups, tmp_path):
    setup, _ = setups
    rows = eval_rows()
    preds = one_by_one(setup.model, rows)
    right = sum(p == r["label"] for p, r in zip(preds, rows))
    metrics = setup.evaluate(setup.model)
    assert metrics["eval_accuracy"] == pytest.approx(right / len(rows))
    assert metrics["eval_loss"] > 0 and setup.model.training
    final = setup.final_evaluate(setup.model, tmp_path)
    assert final["stepgame_acc"] == pytest.approx(right / len(rows)) and "stepgame_acc_k1" in final
    assert (tmp_path / "stepgame_results.md").is_file()


def test_save_and_load_predictor_round_trip(setups, tmp_path):
    setup, _ = setups
    setup.save_adapter(setup.model, tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / ADAPTER_META).read_text())
    assert meta["method"] == "pcp" and meta["kind"] == "masked_lm" and meta["weights"].startswith("full masked-LM")
    assert meta["verbalizer"] == dict(zip(LABELS, KEYPAD)) and meta["template"] == "{text} Answer: {mask}."
    assert (tmp_path / "adapter" / "model.safetensors").is_file()
    rows = generate(2, 8, seed=4)
    want = one_by_one(setup.model, rows)
    predictor = load_predictor(tmp_path / "adapter")
    assert predictor.predict(rows) == want
    assert predictor.predict_stepgame([r["story"] for r in rows], [r["question"] for r in rows]) == want


# ---- bad input ----------------------------------------------------------------------------------
def test_verbalizer_word_not_a_single_token_is_named():
    spec = ",".join(f"{lab}:{c}" for lab, c in zip(LABELS, KEYPAD)).replace("left:4", "left:west")
    with pytest.raises(ConfigError, match=r"label word 'west' \(label 'left'\) is not a single token"):
        pcp.setup(flat(verbalizer=spec), 0, 1)
    with pytest.raises(ConfigError, match=r"label word 'west' \(label 'left'\).*\(at verbalizer="):
        check_space(pcp.RECIPE, {"model": "tiny:bert"}, {"verbalizer": {"type": "categorical", "values": ["stepgame", spec]}})
    with pytest.raises(ConfigError, match="missing 'overlap'"):
        check_space(pcp.RECIPE, {"model": "tiny:bert", "verbalizer": spec.replace("left:west", "left:4").rsplit(",", 1)[0]}, {})


def test_bad_templates_are_named():
    with pytest.raises(ConfigError, match=r"template '\{text\} Answer:' needs exactly one \{mask\} slot"):
        pcp.setup(flat(template="{text} Answer:"), 0, 1)
    with pytest.raises(ConfigError, match=r"has slot \{passage\}; StepGame rows fill \{text\}, \{story\}, "):
        check_space(pcp.RECIPE, {"model": "tiny:bert", "template": "{passage} {mask}"}, {})
    with pytest.raises(ConfigError, match="PCP needs a masked LM .* model 'tiny:gpt2' is a causal model"):
        check_space(pcp.RECIPE, {"model": "tiny:gpt2"}, {})
    check_space(pcp.RECIPE, {"model": "tiny:bert"}, {"zero_stage": {"type": "categorical", "values": [1, 3]}})


def test_cli_bad_verbalizer_exits_2_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: minilm\nverbalizer: 'left:left,right:right,above:above,below:below,"
                   "upper-left:upper-left,upper-right:northeast,lower-left:southwest,lower-right:southeast,"
                   "overlap:overlap'\n")
    code = main(["train", "pcp", "--config", str(cfg), "--storage", str(tmp_path / "ray"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("raypost: error: ")
    assert "label word 'upper-left' (label 'upper-left') is not a single token" in err[0]
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
    cfg.write_text("model: tiny:bert\ntemplate: 'no slot here'\n")
    assert main(["train", "pcp", "--config", str(cfg)]) == 2
    assert "needs exactly one {mask} slot" in capsys.readouterr().err


# ---- MiniLM: the checkpoint has no MLM head -------------------------------------------------------
def test_minilm_head_warning_reaches_the_trial_params_and_log(caplog):
    setup = pcp.setup(flat(model="minilm", train_k="2", train_per_k=30, labelled_per_label=1, unlabelled_size=4,
                           cpt_steps=1, batch_size=2, eval_per_k=2, max_prompt_length=96), 0, 1)
    warning = setup.params["mlm_head_warning"]  # an MLflow param of the trial run
    assert "model 'minilm' has no masked-LM head" in warning and "cls.predictions" in warning
    assert any("no masked-LM head" in r.getMessage() for r in caplog.records)  # still logged as usual
    assert setup.params["verbalizer_words"] == "left,right,above,below,northwest,northeast,southwest,southeast,overlap"
    metrics = setup.evaluate(setup.model)
    assert 0 <= metrics["eval_accuracy"] <= 1


def test_head_warning_goes_to_stderr_when_logging_is_not_configured(monkeypatch, capfd):
    """A Ray worker configures no logging handler: the warning is printed to stderr (the worker's
    log) instead of being swallowed by the capturing handler."""
    import logging

    def fake_load_mlm(name, seed=0):
        logging.getLogger("raypost.methods.pcp.mlm").warning("model %r has no masked-LM head", name)
        return "base"

    monkeypatch.setattr(pcp, "load_mlm", fake_load_mlm)
    monkeypatch.setattr(logging.Logger, "hasHandlers", lambda self: False)
    assert pcp.load_mlm_reporting("minilm", 0) == ("base", ["model 'minilm' has no masked-LM head"])
    assert "WARNING raypost.methods.pcp.mlm: model 'minilm' has no masked-LM head" in capfd.readouterr().err


# ---- the search space ---------------------------------------------------------------------------
def test_default_space_loads():
    from raypost.tune.space import default_space_file, load_space

    space = load_space(default_space_file("pcp"), "pcp")
    assert space.fixed["model"] == "minilm" and {"mask_prob", "cpt_steps", "cpt_lr", "ft_lr"} <= set(space.search)
    assert "raypost sweep pcp" in default_space_file("pcp").read_text()
    assert space.optuna_space()["cpt_steps"].step == 1


def test_a_resumed_trial_skips_stage1(setups):
    """A worker group restarted from a checkpoint loads every weight from it (PCP freezes none),
    so stage 1 is not redone: weights start as without stage 1, no second cpt_loss curve."""
    with_cpt, without = setups
    resumed = pcp.setup(flat(), 0, 1, resuming=True)
    assert resumed.params["cpt_skipped_on_resume"] is True and resumed.pre_metrics == []
    assert len(with_cpt.pre_metrics) == 12 and "cpt_skipped_on_resume" not in with_cpt.params
    same = [torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), without.model.state_dict().values())]
    assert all(same)
    resumed = pcp.setup(flat(pseudo_label_steps=4), 0, 1, resuming=True)  # no first model either
    assert resumed.pre_metrics == [] and not [k for k in resumed.params if k.startswith("pseudo_label")]


# ---- pseudo-labels (pseudo_label_steps) -----------------------------------------------------------
def test_pseudo_labels_fill_the_slot_and_stage1_restarts_from_the_original_weights(setups, monkeypatch):
    """The first prompt model's labels (checked one example at a time) are the label words in stage
    1's slots (token ids); stage 1 then starts from the original weights, not the first model's."""
    seen = {}
    real_pseudo, real_cpt = pcp.pseudo_label_sharded, pcp.continued_pretraining_sharded

    def spy_pseudo(clf, labelled, unlabelled, *args):
        start = time.perf_counter()
        labels, losses = real_pseudo(clf, labelled, unlabelled, *args)
        seen.update(pseudo_s=time.perf_counter() - start, labels=labels, rows=unlabelled, independent=one_by_one(clf, unlabelled),
                    first_model={k: v.clone() for k, v in clf.mlm.state_dict().items()})
        return labels, losses

    def spy_cpt(model, tokenizer, texts, *args):
        seen.update(texts=texts, stage1_start={k: v.clone() for k, v in model.state_dict().items()})
        return real_cpt(model, tokenizer, texts, *args)

    monkeypatch.setattr(pcp, "pseudo_label_sharded", spy_pseudo)
    monkeypatch.setattr(pcp, "continued_pretraining_sharded", spy_cpt)
    start = time.perf_counter()
    setup = pcp.setup(flat(pseudo_label_steps=8), 0, 1)
    seen["setup_s"] = time.perf_counter() - start
    tok, rows, labels = setup.model.tokenizer, seen["rows"], seen["labels"]

    # the pseudo-labels are what the first model predicts; p["pseudo_label_accuracy"] compares them with the truth
    assert len(labels) == len(rows) == 24 and labels == seen["independent"]
    p = setup.params
    assert p["pseudo_label_accuracy"] == pytest.approx(sum(a == r["label"] for a, r in zip(labels, rows)) / 24)
    assert p["pseudo_label_counts"] == ",".join(f"{lab}:{labels.count(lab)}" for lab in LABELS)
    assert p["pseudo_label_loss_last"] < p["pseudo_label_loss_first"]
    # the time covers the pseudo-labelling (measured here around it) and is part of setup()
    assert seen["pseudo_s"] - 0.01 <= p["pseudo_label_seconds"] <= seen["setup_s"]
    assert [s for s, m in setup.pre_metrics if "pseudo_label_loss" in m] == list(range(1, 9))
    assert [s for s, m in setup.pre_metrics if "cpt_loss" in m] == list(range(1, 13))

    # stage-1 inputs: the [MASK] texts with the pseudo-label's word id at the slot, nothing else changed
    word_id = dict(zip(LABELS, (tok.convert_tokens_to_ids(c) for c in KEYPAD)))
    masked = pcp_texts(PromptTemplate("{text} Answer: {mask}."), [pcp.template_row(r) for r in rows], tok)
    for ids, plain, label in zip(seen["texts"], masked, labels):
        slot = plain.index(tok.mask_token_id)
        assert ids[slot] == word_id[label] and tok.mask_token_id not in ids
        assert ids[:slot] + ids[slot + 1:] == plain[:slot] + plain[slot + 1:]

    # restore is real: stage 1 starts from freshly loaded weights (not the first model's), so the
    # final weights are exactly the original ones + stage 1 on the pseudo-labelled texts
    original = pcp.load_mlm("tiny:bert", seed=0).model
    start = seen["stage1_start"]
    assert all(torch.equal(start[k], v) for k, v in original.state_dict().items())
    assert not all(torch.equal(start[k], v) for k, v in seen["first_model"].items())
    assert p["cpt_probe_loss_before"] == setups[0].params["cpt_probe_loss_before"]  # same weights, same probe
    train, cfg, _, _ = pcp.split_flat(flat(pseudo_label_steps=8), *pcp.CONFIG_CLASSES)
    torch.manual_seed(0)
    real_cpt(original, tok, seen["texts"], cfg, train, 0, 1, torch.device("cpu"))
    final = setup.model.mlm.state_dict()
    assert all(torch.equal(final[k], v) for k, v in original.state_dict().items())


def test_gather_sharded_restores_the_row_order(monkeypatch):
    """Rank r labels rows r, r + world, ...; one all_gather of padded shards gives every rank all rows in order."""
    import torch.distributed as dist

    n, world = 7, 3
    shards = [[10 * i for i in range(n)][r::world] for r in range(world)]  # uneven: 3, 2, 2 rows

    def fake_all_gather(out, local):
        assert torch.equal(local[:len(shards[1])], torch.tensor(shards[1])) and len(local) == 3
        for r, t in enumerate(out):
            t.fill_(-1)
            t[:len(shards[r])] = torch.tensor(shards[r])

    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_gather", fake_all_gather)
    assert pcp.gather_sharded(shards[1], n, world) == [10 * i for i in range(n)]
    assert pcp.gather_sharded([5, 6], 2, 1) == [5, 6]


def test_bad_pseudo_label_steps_are_named():
    from raypost.tune.space import default_space_file, load_space

    with pytest.raises(ConfigError, match=r"^pseudo_label_steps=-1 is below its minimum 0$"):
        pcp.setup(flat(pseudo_label_steps=-1), 0, 1)
    with pytest.raises(ConfigError, match=r"^pseudo_label_steps=5 needs cpt_steps > 0 \(pseudo-labels only fill "
                                          r"stage 1's texts, and cpt_steps=0 skips stage 1\); set cpt_steps > 0 or "
                                          r"pseudo_label_steps=0$"):
        pcp.setup(flat(pseudo_label_steps=5, cpt_steps=0), 0, 1)
    # before any trial starts: the default sweep searches cpt_steps from 0
    with pytest.raises(ConfigError, match=r"pcp.yaml with --set pseudo_label_steps=5: pseudo_label_steps=5 needs "
                                          r"cpt_steps > 0 "):
        load_space(default_space_file("pcp"), "pcp", overrides={"pseudo_label_steps": 5})
