"""Prompt-based continued pre-training (PCP) on StepGame: both stages in one trial. See docs/pcp.md.

Stage 1 runs inside ``setup()``: masked-LM continued pre-training on *unlabelled* StepGame texts
written into the prompt template (``cpt_steps`` steps at ``cpt_lr``, ``mask_prob`` masking), with a
plain torch AdamW. It is data-parallel like stage 2: each rank masks its own shard of the texts
and gradients are averaged with ``torch.distributed.all_reduce`` before every step, so all ranks
take the same step from the same weights and end stage 1 with identical weights (checked: the
loop's ``replica_max_diff``). Running stage 1 identically on every rank would also keep them in
sync, but every extra worker would then redo the same work instead of adding data per step.

With ``pseudo_label_steps`` N > 0 (the paper's PCP with pseudo-labels), stage 1 first trains stage 2's
classifier from the original weights for N steps at ``ft_lr`` on the labelled rows (the same
all-reduced AdamW loop, ``sharded_adamw``), lets it label the unlabelled rows (each rank its shard,
one ``all_gather``, so every rank holds the same labels), restores the original weights, and writes
each predicted label word into the template's slot instead of [MASK]. Stage 2 is unchanged.

Stage 2 is what the shared DeepSpeed loop trains: ``PromptMLMClassifier`` (the MLM head read at the
template's mask slot, restricted to the verbalizer's label words) on a few labelled examples per
relation (``labelled_per_label``), at ``ft_lr``. Both stages train every weight, as in the paper,
so the saved "adapter" is the whole masked-LM model.

Stage-1 losses are logged as the ``cpt_loss`` metric curve (``TrialSetup.pre_metrics``) and as
params (``cpt_loss_first``/``cpt_loss_last``, and a fixed held-out probe before/after); the
pseudo-label model's as ``pseudo_label_loss`` and ``pseudo_label_*`` params (accuracy against the
rows' true labels, label counts, seconds).
"""

from __future__ import annotations

import functools
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from raypost.batches import sharded_batches
from raypost.configs import check, check_range, field, split_flat
from raypost.distributed import gather_sharded, replica_max_diff, sharded_adamw
from raypost.errors import ConfigError, DataError
from raypost.methods.pcp import (
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
from raypost.recipes.base import AdapterMeta, Recipe, TrialSetup, save_whole_model, trainable_count
from raypost.recipes.train_config import TrainConfig
from raypost.stepgame.labels import LABELS, format_input, story_list
from raypost.stepgame.task import (
    TASK_FORMAT,
    StepgameDataConfig,
    StepgameEvaluator,
    StepgamePredictor,
    check_rows,
    load_eval_rows,
    load_train_rows,
    resolve_data_paths,
)

log = logging.getLogger(__name__)

ROW_FIELDS = ("text", "story", "question")  # what a StepGame row fills in a template
WEIGHTS = ("full masked-LM model (save_pretrained): PCP fine-tunes every weight in both stages, so the "
           "adapter is the whole model; load_predictor needs only the base model's tokenizer")


@dataclass
class PcpDataConfig:
    """The few-label setting. Rows come from ``StepgameDataConfig`` (train_data, train_k, train_per_k):
    a shuffled pool, split into labelled rows (stage 2) and unlabelled texts (stage 1)."""

    labelled_per_label: int = field(16, help="Stage 2: labelled training examples per relation (9 StepGame "
                                             "labels); 0 = every pool row (stage 1 then reads the same texts "
                                             "without labels).")
    unlabelled_size: int = field(1000, help="Stage 1: unlabelled StepGame texts (labels dropped; disjoint from "
                                            "the labelled rows); 0 = every other pool row.")

    def __post_init__(self):
        check_range("labelled_per_label", self.labelled_per_label, 0)
        check_range("unlabelled_size", self.unlabelled_size, 0)


CONFIG_CLASSES = (TrainConfig, PcpConfig, StepgameDataConfig, PcpDataConfig)


# ---- data -----------------------------------------------------------------------------------
def template_row(row: dict) -> dict:
    """The fields a template can use: ``{text}`` (what every StepGame model reads), ``{story}``, ``{question}``."""
    story = story_list(row["story"])
    return {"text": format_input(story, row["question"]), "story": " ".join(s.strip() for s in story),
            "question": row["question"].strip()}


def check_template(template: PromptTemplate) -> None:
    unknown = [f for f in template.fields if f not in ROW_FIELDS]
    if unknown:
        raise ConfigError(f"template {template.template!r} has slot {{{unknown[0]}}}; StepGame rows fill "
                          f"{', '.join('{' + f + '}' for f in ROW_FIELDS)} (and {{mask}})")


def check_verbalizer(verbalizer: Verbalizer) -> None:
    missing = [lab for lab in LABELS if lab not in verbalizer.labels]
    extra = [lab for lab in verbalizer.labels if lab not in LABELS]
    if missing or extra:
        raise ConfigError(f"verbalizer {verbalizer} must map exactly the StepGame labels ({', '.join(LABELS)}); "
                          + (f"missing {missing[0]!r}" if missing else f"unknown label {extra[0]!r}"))


def split_pool(rows: list[dict], per_label: int, unlabelled_size: int, seed: int,
               need_unlabelled: bool = True) -> tuple[list[dict], list[dict]]:
    """(labelled rows, unlabelled rows) from one pool. The pool is shuffled (``seed``); the first
    ``per_label`` rows of each label (that the pool has) are labelled and stage 1 takes ``unlabelled_size`` of the
    others (0 = all), so the two are disjoint. ``per_label=0`` is the full-data setting: every row
    is labelled and stage 1 reads the same texts without their labels. Too few rows of a label
    (or for stage 1) raise ``DataError`` naming it."""
    order = list(rows)
    random.Random(f"pcp:{seed}").shuffle(order)
    if per_label == 0:
        labelled, rest = order, order
    else:
        taken: dict[str, int] = {}
        labelled, rest = [], []
        for row in order:
            if taken.get(row["label"], 0) < per_label:
                taken[row["label"]] = taken.get(row["label"], 0) + 1
                labelled.append(row)
            else:
                rest.append(row)
        for label in taken:  # labels the pool lacks (overlap at k=1) are not asked for
            if taken[label] < per_label:
                raise DataError(f"labelled_per_label={per_label} but the training pool has {taken[label]} "
                                f"rows of label {label!r}; raise train_per_k or lower labelled_per_label")
    if not need_unlabelled:
        return labelled, []
    if unlabelled_size and len(rest) < unlabelled_size:
        raise DataError(f"unlabelled_size={unlabelled_size} but only {len(rest)} pool rows are left for stage 1; "
                        "raise train_per_k or lower unlabelled_size")
    return labelled, rest[:unlabelled_size] if unlabelled_size else rest


def encode_prompts(clf: PromptMLMClassifier, rows: Sequence[dict], with_labels: bool = True) -> tuple[list[dict], int]:
    """Each row templated once: ``{"input_ids", "mask_position", "label"?}``, and how many were cut
    to ``max_prompt_length`` (the longest text field loses its end; never the template or mask)."""
    tokenizer, out, cut = clf.tokenizer, [], 0
    for row in rows:
        filled = template_row(row)
        ids, pos = clf.template.encode(filled, tokenizer, tokenizer.mask_token_id, clf.max_prompt_length)
        full, _ = clf.template.encode(filled, tokenizer, tokenizer.mask_token_id, 10**9)
        cut += len(ids) < len(full)
        ex = {"input_ids": ids, "mask_position": pos}
        if with_labels:
            ex["label"] = clf.verbalizer.index(row["label"])
        out.append(ex)
    return out, cut


def collate_prompts(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        ids[i, :len(e["input_ids"])], mask[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"]), 1
    batch = {"input_ids": ids, "attention_mask": mask,
             "mask_positions": torch.tensor([e["mask_position"] for e in examples])}
    if "label" in examples[0]:
        batch["labels"] = torch.tensor([e["label"] for e in examples])
    return batch


def prompt_batches(examples: list[dict], pad_id: int, batch_size: int, rank: int, world_size: int, seed: int):
    """This rank's stage-2 micro-batches forever (``sharded_batches`` with ``collate_prompts``)."""
    return sharded_batches(examples, lambda chunk: collate_prompts(chunk, pad_id), batch_size, rank, world_size,
                           seed, what="labelled examples", hint="raise labelled_per_label")


def check_masked_lm(model: str) -> None:
    """PCP needs an encoder with a masked-LM head (read cheaply from the model's config)."""
    from raypost.models.dims import default_kind

    kind = default_kind(model)
    if kind != "classifier":  # default_kind calls encoders (the masked-LM families) classifiers
        raise ConfigError(f"PCP needs a masked LM (an encoder such as minilm or tiny:bert); model {model!r} "
                          f"is a {kind} model")


# ---- stage 1 --------------------------------------------------------------------------------
def load_mlm_reporting(name: str, seed: int) -> tuple[object, list[str]]:
    """``load_mlm`` plus the text of its warnings (MiniLM ships no MLM head), so the trial can log
    them as a param. If nothing else would print them (no logging handler configured, as in a Ray
    worker), they go to stderr, which Ray keeps in the worker's log."""
    mlm_log = logging.getLogger("raypost.methods.pcp.mlm")
    shown_elsewhere = mlm_log.hasHandlers()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    mlm_log.addHandler(handler)
    try:
        base = load_mlm(name, seed=seed)
    finally:
        mlm_log.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    if not shown_elsewhere:
        for message in messages:
            print(f"WARNING raypost.methods.pcp.mlm: {message}", file=sys.stderr, flush=True)
    return base, messages


def continued_pretraining_sharded(model, tokenizer, texts: list[list[int]], cfg: PcpConfig, train: TrainConfig,
                                  rank: int, world_size: int, device: torch.device) -> list[float]:
    """Stage 1: ``cpt_steps`` AdamW steps of ``mlm_loss`` at ``cpt_lr``; rank r masks texts r, r + world, ...
    (``sharded_adamw``: gradients averaged over the ranks every step). Returns the mean loss per step."""
    if cfg.cpt_steps == 0:
        return []
    shard = texts[rank::world_size]
    if not shard:
        raise DataError(f"{len(texts)} unlabelled texts cannot be shared by {world_size} workers; "
                        "raise unlabelled_size")
    batches = mlm_batches(shard, tokenizer, train.batch_size, cfg.mask_prob, seed=train.seed + 7919 * rank,
                          max_prompt_length=cfg.max_prompt_length)
    return sharded_adamw(model, lambda batch: mlm_loss(model, batch), batches, cfg.cpt_steps, cfg.cpt_lr,
                         weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm, world_size=world_size,
                         device=device, what="stage 1")


def pseudo_label_sharded(clf: PromptMLMClassifier, labelled: list[dict], unlabelled: list[dict], cfg: PcpConfig,
                         train: TrainConfig, rank: int, world_size: int, device: torch.device,
                         batch_size: int) -> tuple[list[str], list[float]]:
    """The paper's first prompt-based model: ``clf`` (stage 2's classifier) trained ``pseudo_label_steps``
    AdamW steps at ``ft_lr`` on the labelled rows (``prompt_batches`` + ``sharded_adamw``, as
    data-parallel as stage 1), then its label for every unlabelled row: rank r predicts rows
    r, r + world, ... and one ``all_gather`` gives every rank the same full list. Trains ``clf``
    in place; the caller restores the weights. Returns (pseudo-labels, loss per step)."""
    examples, _ = encode_prompts(clf, labelled)
    batches = prompt_batches(examples, clf.tokenizer.pad_token_id, train.batch_size, rank, world_size, train.seed)
    losses = sharded_adamw(clf, lambda batch: clf(**batch).loss, batches, cfg.pseudo_label_steps, cfg.ft_lr,
                           weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm,
                           world_size=world_size, device=device, what="pseudo-labelling")
    shard = unlabelled[rank::world_size]
    preds = classify(clf, encode_prompts(clf, shard, with_labels=False)[0], batch_size)[0] if shard else []
    ids = gather_sharded([clf.verbalizer.index(p) for p in preds], len(unlabelled), world_size)
    return [clf.verbalizer.labels[i] for i in ids], losses


@torch.no_grad()
def probe_loss(model, batch: dict) -> float:
    """MLM loss on a fixed masked batch, in eval mode (no dropout), for before/after comparisons."""
    was = model.training
    model.eval()
    try:
        return float(mlm_loss(model, batch))
    finally:
        model.train(was)


# ---- evaluation -----------------------------------------------------------------------------
@torch.no_grad()
def classify(clf: PromptMLMClassifier, examples: list[dict], batch_size: int) -> tuple[list[str], float | None]:
    """Predicted labels (argmax over the label words at the mask) and the mean cross-entropy when
    the examples carry labels. Batches go in length order; results come back in the input order."""
    was = clf.training
    clf.eval()
    try:
        device = clf.label_word_ids.device
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        preds: list[str] = [""] * len(examples)
        loss_sum = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate_prompts([examples[i] for i in idx],
                                                                 clf.tokenizer.pad_token_id).items()}
            out = clf(**batch)
            for i, p in zip(idx, out.logits.argmax(-1).tolist()):
                preds[i] = clf.verbalizer.labels[p]
            if "labels" in batch:
                loss_sum += float(F.cross_entropy(out.logits.float(), batch["labels"], reduction="sum"))
        return preds, (loss_sum / len(examples) if "label" in examples[0] else None)
    finally:
        clf.train(was)


# ---- the recipe -----------------------------------------------------------------------------
def setup(flat: dict, rank: int, world_size: int, *, resuming: bool = False, device=None) -> TrialSetup:
    from raypost.models import pick_device

    train, pcp, data_cfg, few = split_flat(flat, *CONFIG_CLASSES)
    template = PromptTemplate(pcp.template)
    check_template(template)
    check_masked_lm(train.model)
    device = device or pick_device(train.device)
    base, warnings = load_mlm_reporting(train.model, seed=train.seed)
    tokenizer, mlm = base.tokenizer, base.model
    check(tokenizer.mask_token_id is not None, f"model {train.model!r} has no mask token; PCP needs a masked LM")
    verbalizer = make_verbalizer(pcp.verbalizer, tokenizer)  # ConfigError naming a word that is not one token
    check_verbalizer(verbalizer)
    mlm.requires_grad_(True)

    # every rank builds the same pool (deterministic generation or file order) and the same split
    pool, eval_rows = load_train_rows(data_cfg), load_eval_rows(data_cfg)
    labelled, unlabelled = split_pool(pool, few.labelled_per_label, few.unlabelled_size, data_cfg.data_seed,
                                      need_unlabelled=pcp.cpt_steps > 0)

    # ---- stage 1: continued pre-training on templated unlabelled texts (plain torch, data-parallel)
    mlm.to(device)
    params: dict = {}
    pre_metrics: list = []
    if warnings:
        params["mlm_head_warning"] = " | ".join(warnings)
    if pcp.cpt_steps and resuming:
        # the Ray Train checkpoint holds every weight (PCP freezes none), stage 1's result included:
        # the loop loads it right after DeepSpeed starts, so redoing stage 1 would be thrown away
        log.info("resuming from a checkpoint: stage 1 (%d steps) is not run again", pcp.cpt_steps)
        params["cpt_skipped_on_resume"] = True
    elif pcp.cpt_steps:
        pseudo = None
        if pcp.pseudo_label_steps:
            # the paper's PCP with pseudo-labels: a first prompt-based model (stage 2's classifier, from the
            # original weights) labels the unlabelled texts; stage 1 then starts again from the original weights
            start = time.perf_counter()
            snapshot = {k: v.detach().to("cpu", copy=True) for k, v in mlm.state_dict().items()}
            torch.manual_seed(train.seed + rank)
            first = PromptMLMClassifier(mlm, tokenizer, template, verbalizer, pcp.max_prompt_length).to(device)
            pseudo, pl_losses = pseudo_label_sharded(first, labelled, unlabelled, pcp, train, rank, world_size,
                                                     device, data_cfg.eval_batch_size)
            mlm.load_state_dict(snapshot)
            del first, snapshot
            known = [(p, r["label"]) for p, r in zip(pseudo, unlabelled) if r.get("label") in LABELS]
            pre_metrics += [(i + 1, {"pseudo_label_loss": value}) for i, value in enumerate(pl_losses)]
            params.update({"pseudo_label_loss_first": pl_losses[0], "pseudo_label_loss_last": pl_losses[-1],
                           "pseudo_label_counts": ",".join(f"{lab}:{pseudo.count(lab)}" for lab in verbalizer.labels),
                           "pseudo_label_seconds": round(time.perf_counter() - start, 2)})
            if known:  # generated and official StepGame rows keep their labels: how right were the pseudo-labels?
                params["pseudo_label_accuracy"] = sum(p == t for p, t in known) / len(known)
        texts = pcp_texts(template, [template_row(r) for r in unlabelled], tokenizer, pcp.max_prompt_length,
                          verbalizer=verbalizer, pseudo_labels=pseudo)
        probe_texts = pcp_texts(template, [template_row(r) for r in eval_rows[:data_cfg.eval_batch_size]], tokenizer,
                                pcp.max_prompt_length)
        probe = {k: v.to(device) for k, v in next(mlm_batches(probe_texts, tokenizer, len(probe_texts), pcp.mask_prob,
                                                              seed=12345)).items()}
        before = probe_loss(mlm, probe)
        torch.manual_seed(train.seed + rank)  # dropout: each rank its own stream, as under DeepSpeed
        start = time.perf_counter()
        losses = continued_pretraining_sharded(mlm, tokenizer, texts, pcp, train, rank, world_size, device)
        pre_metrics += [(i + 1, {"cpt_loss": value}) for i, value in enumerate(losses)]
        params.update({"cpt_texts": len(texts), "cpt_loss_first": losses[0], "cpt_loss_last": losses[-1],
                       "cpt_probe_loss_before": before, "cpt_probe_loss_after": probe_loss(mlm, probe),
                       "cpt_seconds": round(time.perf_counter() - start, 2),
                       "cpt_replica_max_diff": replica_max_diff(mlm, world_size, trainable_only=False)})

    # ---- stage 2: prompt-based fine-tuning, trained by the DeepSpeed loop
    clf = PromptMLMClassifier(mlm, tokenizer, template, verbalizer, pcp.max_prompt_length).to(device)
    train_examples, train_cut = encode_prompts(clf, labelled)
    eval_examples, eval_cut = encode_prompts(clf, eval_rows)
    for name, cut, n in (("labelled", train_cut, len(labelled)), ("eval", eval_cut, len(eval_rows))):
        if cut:
            log.warning("%d of %d %s prompts exceed max_prompt_length=%d; their longest field was cut",
                        cut, n, name, pcp.max_prompt_length)
    evaluation = StepgameEvaluator(
        eval_rows, lambda module, idx: classify(module, [eval_examples[i] for i in idx], data_cfg.eval_batch_size),
        rank=rank, world_size=world_size)
    n_trainable = trainable_count(clf)

    def compute_loss(engine, batch):
        return engine(**batch).loss

    def save_adapter(module: PromptMLMClassifier, directory: Path) -> None:
        save_whole_model(module.mlm, Path(directory))
        AdapterMeta("pcp", train.model, "masked_lm", n_trainable, task_format=TASK_FORMAT, labels=list(LABELS),
                    settings={"weights": WEIGHTS, "template": module.template.template,
                              "verbalizer": dict(zip(module.verbalizer.labels, module.verbalizer.words)),
                              "max_prompt_length": module.max_prompt_length}).write(directory)

    params.update({"trainable_params": n_trainable, "labelled_examples": len(labelled),
                   "unlabelled_texts": len(unlabelled), "eval_examples": len(eval_rows),
                   "train_truncated": train_cut, "eval_truncated": eval_cut,
                   "verbalizer_words": ",".join(verbalizer.words)})
    return TrialSetup(
        model=clf, param_groups=[{"name": "all", "params": [p for p in clf.parameters() if p.requires_grad],
                                  "lr": pcp.ft_lr}],
        train_batches=prompt_batches(train_examples, tokenizer.pad_token_id, train.batch_size, rank, world_size,
                                     train.seed),
        compute_loss=compute_loss, evaluate=evaluation.evaluate, save_adapter=save_adapter,
        final_evaluate=evaluation.final_evaluate, params=params, pre_metrics=pre_metrics)


# ---- search-space limits, checked on the driver before any trial starts ------------------------
@functools.lru_cache(maxsize=8)
def _tokenizer(model: str):
    from raypost.models import load_tokenizer

    check_masked_lm(model)
    return load_tokenizer(model)  # no weights


def check_point(flat: dict) -> None:
    """PCP's limits at one point of a space: every template has one mask slot and only StepGame
    fields, and the verbalizer maps each StepGame label to a single token of the model's tokenizer."""
    train, pcp, _, _ = split_flat(flat, *CONFIG_CLASSES)
    check_template(PromptTemplate(pcp.template))
    tokenizer = _tokenizer(train.model)
    check(tokenizer.mask_token_id is not None,
          f"model {train.model!r} has no mask token; PCP needs a masked LM (e.g. minilm, tiny:bert)")
    check_verbalizer(make_verbalizer(pcp.verbalizer, tokenizer))


# ---- inference -----------------------------------------------------------------------------
class PromptStepgamePredictor(StepgamePredictor):
    """StepGame answers from a PCP model: the label word with the highest MLM logit at the mask."""

    def __init__(self, clf: PromptMLMClassifier, batch_size: int = 32):
        super().__init__(clf, clf.tokenizer, "masked_lm", clf.max_prompt_length, batch_size=batch_size)
        self.clf = clf

    def predict(self, rows: Sequence[dict]) -> list[str]:
        rows = check_rows(rows)
        if not rows:
            return []
        examples, _ = encode_prompts(self.clf, rows, with_labels=False)
        return classify(self.clf, examples, self.batch_size)[0]


def load_predictor(adapter_dir, meta: AdapterMeta, model: str | None = None,
                   batch_size: int = 32) -> PromptStepgamePredictor:
    """A predictor from a saved PCP folder (the whole fine-tuned MLM). ``model`` only names where
    the tokenizer comes from (the recorded base model by default)."""
    from transformers import AutoModelForMaskedLM

    from raypost.models import load_tokenizer, pick_device

    tokenizer = load_tokenizer(model or meta.model)
    mlm = AutoModelForMaskedLM.from_pretrained(Path(adapter_dir))
    clf = PromptMLMClassifier(mlm, tokenizer, meta.get("template"), Verbalizer(meta.get("verbalizer"), tokenizer),
                              meta.get("max_prompt_length"))
    return PromptStepgamePredictor(clf.to(pick_device()).eval(), batch_size=batch_size)


RECIPE = Recipe(task_format=TASK_FORMAT, name="pcp", config_classes=CONFIG_CLASSES, setup=setup, check_point=check_point,
                prepare_fixed=lambda fixed, search: resolve_data_paths(fixed), load_predictor=load_predictor,
                summary="prompt-based continued pre-training, then prompt-based fine-tuning (masked LMs)",
                loads_partitioned=False)  # stage 1 trains the whole MLM in plain torch before DeepSpeed starts

__all__ = ["RECIPE", "CONFIG_CLASSES", "PcpDataConfig", "PromptStepgamePredictor", "setup", "check_point",
           "load_predictor", "split_pool", "template_row", "continued_pretraining_sharded", "pseudo_label_sharded"]
