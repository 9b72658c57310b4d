"""The StepGame task every recipe shares: data, batches per model kind, evaluation, prediction.

A model reads ``format_input(story, question)`` and answers in one of three ways (the *kind*):

- ``classifier``: a 9-way head; labels are ids in ``LABELS`` order; prediction = argmax.
- ``seq2seq``: the decoder writes ``label_word(label)`` ('upper left'); greedy decoding, then
  ``match_label`` maps the text back to a label.
- ``causal``: the model continues ``<input>\\nAnswer:`` with `` upper left<eos>``; labels are
  -100 on the prompt so only the answer is learnt; greedy decoding + ``match_label``.

Inputs longer than ``max_length`` lose the *start* of the story (never the question, which the
answer depends on); how many were cut is returned so recipes can log it. Nothing here knows
about a method: recipes pass the tokenizer, the kind and the input limit their model has.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from raypost.batches import Batch, sharded_batches, weights_fingerprint
from raypost.configs import check, check_range, field
from raypost.distributed import gather_objects, in_lockstep
from raypost.errors import ConfigError, DataError
from raypost.stepgame.generator import parse_ks
from raypost.stepgame.labels import ID2LABEL, LABEL2ID, LABELS, format_input, label_word, match_label, story_list

log = logging.getLogger(__name__)

GENERATE = "generate"
KINDS = ("classifier", "seq2seq", "causal")
ANSWER_PREFIX = "\nAnswer:"  # what a causal LM's answer follows (saved adapters depend on it)
TASK_FORMAT = 1  # bump when prompts or answers change: adapters record the format they learnt
EVAL_SPLIT, TRAIN_SPLIT = "eval", "train"  # generator streams: the same seed gives different draws
_FILE_K = re.compile(r"qa(\d+)_")  # k in an official file name, as raypost.stepgame.loader reads it


@dataclass
class StepgameDataConfig:
    """Field names are unique across all config classes (a trial config is one flat dict)."""

    train_data: str = field(GENERATE, help="'generate' (the StepGame generator) or comma-separated "
                                           "official-format files/folders (qa{k}_*.json).")
    train_k: str = field("1-3", help="Chain lengths k to train on, e.g. '1-3' or '1,2,5' (also filters files).")
    train_per_k: int = field(1000, help="Training examples per k: generated, or the first N per k read "
                                        "from files (0 = all rows of the files).")
    train_noise: bool = field(False, help="Generated training stories get noise sentences (the paper's setting).")
    data_seed: int = field(0, help="Seed of the generated train and eval sets (they are drawn from "
                                   "different generator streams, so they differ).")
    eval_data: str = field(GENERATE, help="'generate' (a held-out generated set) or comma-separated "
                                          "official-format files/folders, e.g. ../shared/data/stepgame/noise.")
    eval_k: str = field("1-3", help="Chain lengths k to evaluate on.")
    eval_per_k: int = field(50, help="Eval examples per k (per clean/noisy setting when files hold both; "
                                     "0 = all rows of the files). Evaluation runs every eval_every steps.")
    eval_skip: int = field(0, help="Eval rows skipped per k before the eval_per_k are taken: splits one file into "
                                   "rows that choose a trial (eval_skip=0, eval_per_k=N) and rows that report "
                                   "on it (eval_skip=N).")
    eval_noise: bool = field(False, help="Generated eval stories get noise sentences (eval_data='generate' only).")
    eval_batch_size: int = field(32, help="Examples per forward pass during evaluation and prediction.")

    def __post_init__(self):
        for side in ("train", "eval"):
            parse_k_list(f"{side}_k", getattr(self, f"{side}_k"))
            data, per_k = getattr(self, f"{side}_data"), getattr(self, f"{side}_per_k")
            check_range(f"{side}_per_k", per_k, 1 if data == GENERATE else 0)
            if data != GENERATE:
                for path in data_paths(data):
                    check(path.exists(), f"{side}_data: {path} does not exist (give 'generate' or "
                                         "official-format files/folders)")
        check_range("eval_batch_size", self.eval_batch_size, 1)
        check_range("eval_skip", self.eval_skip, 0)


def parse_k_list(name: str, text: str) -> list[int]:
    try:
        return parse_ks(str(text))
    except ConfigError as exc:
        raise ConfigError(f"{name}={text!r}: {str(exc).split(': ', 1)[-1]}") from None


def data_paths(text: str) -> list[Path]:
    return [Path(p.strip()).expanduser() for p in str(text).split(",") if p.strip()]


def resolve_data_paths(fixed: dict) -> None:
    """``check_space`` of every StepGame recipe: ``fixed`` train/eval files must exist; relative
    paths become absolute in place (trial workers may run in another directory)."""
    for key in ("train_data", "eval_data"):
        value = fixed.get(key)
        if isinstance(value, str) and value != GENERATE:
            missing = [str(p) for p in data_paths(value) if not p.exists()]
            check(not missing, f"fixed.{key}: {missing[0] if missing else ''} does not exist")
            fixed[key] = ",".join(str(p.resolve()) for p in data_paths(value))


def load_train_rows(cfg: StepgameDataConfig) -> list[dict]:
    return load_rows(cfg.train_data, parse_k_list("train_k", cfg.train_k), cfg.train_per_k,
                     noise=cfg.train_noise, seed=cfg.data_seed, split=TRAIN_SPLIT)


def load_eval_rows(cfg: StepgameDataConfig) -> list[dict]:
    return load_rows(cfg.eval_data, parse_k_list("eval_k", cfg.eval_k), cfg.eval_per_k,
                     noise=cfg.eval_noise, seed=cfg.data_seed, split=EVAL_SPLIT, skip=cfg.eval_skip)


def check_rows(rows) -> list[dict]:
    """Rows to predict on, as a list; ``DataError`` naming the first row without story or question."""
    rows = list(rows)
    for i, row in enumerate(rows):
        for key in ("story", "question"):
            if key not in row:
                raise DataError(f"row {i}: missing field {key!r} (rows need story and question)")
    return rows


# ---- rows -----------------------------------------------------------------------------------
def load_rows(source: str, ks: list[int], per_k: int, *, noise: bool, seed: int, split: str,
              skip: int = 0) -> list[dict]:
    """StepGame rows (story, question, label, k, hops, noisy) for ``ks``: generated or read from files.

    From files, only ``qa{k}_*.json`` files with a wanted k are read; per (k, clean/noisy) the
    first ``skip`` rows are passed over and at most ``per_k`` of the rest kept (0 = all).
    """
    if source == GENERATE:
        from raypost.stepgame.generator import generate

        return [r for k in ks for r in generate(k, skip + per_k, noise=noise, seed=seed, split=split)[skip:]]
    from raypost.stepgame.loader import read_rows, stepgame_files

    rows, taken, seen = [], {}, {}
    for f in stepgame_files(data_paths(source)):
        m = _FILE_K.search(f.name)
        if m and int(m.group(1)) not in ks:
            continue  # skip reading (and checking) files of other k
        for row in read_rows(f, skip + per_k if (m and per_k) else None):
            group = (row["k"], row["noisy"])
            if row["k"] not in ks:
                continue
            seen[group] = seen.get(group, 0) + 1
            if seen[group] > skip and (not per_k or taken.get(group, 0) < per_k):
                taken[group] = taken.get(group, 0) + 1
                rows.append(row)
    if not rows:
        raise DataError(f"{source}: no rows with k in {ks}" + (f" after skipping {skip} per k" if skip else ""))
    return rows


# ---- encoding -------------------------------------------------------------------------------
def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


def answer_ids(tokenizer, kind: str) -> dict[str, list[int]]:
    """Token ids of each label's answer (with the end-of-sequence token) for generative kinds."""
    if kind == "seq2seq":  # the tokenizer appends </s> itself (T5, ByT5)
        return {lab: tokenizer(label_word(lab))["input_ids"] for lab in LABELS}
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return {lab: tokenizer(" " + label_word(lab), add_special_tokens=False)["input_ids"] + eos for lab in LABELS}


def answer_budget(tokenizer, kind: str) -> int:
    """Tokens the longest answer needs: the generation limit, and the room a causal input leaves."""
    return max(len(ids) for ids in answer_ids(tokenizer, kind).values()) if kind != "classifier" else 0


def encode(rows: Sequence[dict], tokenizer, kind: str, max_length: int,
           with_labels: bool = True) -> tuple[list[dict], int]:
    """One ``{"input_ids", "labels"?}`` per row, and how many inputs were cut to ``max_length``.

    For ``causal`` the input is prompt + answer with labels -100 on the prompt (``prompt_len``
    marks where the answer starts; prediction reads the prompt only).
    """
    if kind not in KINDS:
        raise ConfigError(f"model kind {kind!r} is not one StepGame supports ({', '.join(KINDS)})")
    texts = [format_input(story_list(r["story"]), r["question"]) for r in rows]
    cut = 0
    if kind == "causal":
        budget = answer_budget(tokenizer, kind)
        room = max_length - budget
        check(room >= 8, f"max input length {max_length} leaves {room} tokens for a causal prompt "
                         f"after the {budget}-token answer; raise it")
        bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
        answers = answer_ids(tokenizer, kind)
        out = []
        for row, ids in zip(rows, tokenizer([t + ANSWER_PREFIX for t in texts], add_special_tokens=False)["input_ids"]):
            if len(bos) + len(ids) > room:
                ids, cut = ids[len(bos) + len(ids) - room:], cut + 1  # drop the story's start
            prompt = bos + ids
            ex = {"input_ids": prompt, "prompt_len": len(prompt)}
            if with_labels:
                ans = answers[row["label"]]
                ex = {"input_ids": prompt + ans, "labels": [-100] * len(prompt) + ans, "prompt_len": len(prompt)}
            out.append(ex)
        return out, cut
    full = tokenizer(texts)["input_ids"]
    cut = sum(len(ids) > max_length for ids in full)
    if cut:  # keep the question: cut the story's start (special tokens stay in place)
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"
        try:
            full = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        finally:
            tokenizer.truncation_side = side
    out = [{"input_ids": ids} for ids in full]
    if with_labels:
        answers = answer_ids(tokenizer, kind) if kind == "seq2seq" else None
        for ex, row in zip(out, rows):
            ex["labels"] = LABEL2ID[row["label"]] if kind == "classifier" else answers[row["label"]]
    return out, cut


def collate(examples: Sequence[dict], pad_id: int, left: bool = False, with_labels: bool = True) -> Batch:
    """Pad to the longest example: ``input_ids``, ``attention_mask`` (+ ``labels``, -100 padded)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        span = slice(width - n, width) if left else slice(0, n)
        ids[i, span], mask[i, span] = torch.tensor(e["input_ids"]), 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_labels and "labels" in examples[0]:
        first = examples[0]["labels"]
        if isinstance(first, int):
            batch["labels"] = torch.tensor([e["labels"] for e in examples])
        else:
            lw = max(len(e["labels"]) for e in examples)
            labels = torch.full((len(examples), lw), -100, dtype=torch.long)
            for i, e in enumerate(examples):
                labels[i, :len(e["labels"])] = torch.tensor(e["labels"])
            batch["labels"] = labels
    return batch


def train_batches(examples: list[dict], pad_id: int, batch_size: int, rank: int, world_size: int,
                  seed: int) -> Iterator[Batch]:
    """This rank's micro-batches forever (``sharded_batches`` with this module's ``collate``)."""
    return sharded_batches(examples, lambda chunk: collate(chunk, pad_id), batch_size, rank, world_size, seed,
                           hint="generate more (train_per_k)")


# ---- prediction -----------------------------------------------------------------------------
def _device(model) -> torch.device:
    return next(model.parameters()).device


def _move(batch: Batch, device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def run_model(model, tokenizer, kind: str, examples: list[dict], batch_size: int,
              with_loss: bool = True) -> tuple[list[str | None], float | None]:
    """Predicted labels (None where a generated answer names none) and the mean eval loss.

    Batches go in order of length (less padding); results come back in the examples' order.
    The model is put in eval mode and back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        device, pad_id, lockstep = _device(model), tokenizer.pad_token_id, in_lockstep(model)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        preds: list[str | None] = [None] * len(examples)
        loss_sum, loss_n = 0.0, 0
        budget = answer_budget(tokenizer, kind)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            chunk = [examples[i] for i in idx]
            has_labels = with_loss and "labels" in chunk[0]
            if kind == "classifier":
                batch = _move(collate(chunk, pad_id, with_labels=has_labels), device)
                out = model(**batch)
                for i, p in zip(idx, out.logits.argmax(-1).tolist()):
                    preds[i] = ID2LABEL[p]
            else:
                if has_labels:  # teacher-forced loss on the training form of the batch
                    out = model(**_move(collate(chunk, pad_id), device))
                if kind == "causal":  # generate from the prompt alone, left-padded
                    prompts = [{"input_ids": e["input_ids"][:e["prompt_len"]]} for e in chunk]
                    enc = _move(collate(prompts, pad_id, left=True, with_labels=False), device)
                else:
                    enc = _move(collate(chunk, pad_id, with_labels=False), device)
                gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                     max_new_tokens=budget, do_sample=False, num_beams=1,
                                     pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                                     synced_gpus=lockstep)  # ZeRO-3: every rank steps until all are done
                width = enc["input_ids"].shape[1]
                if kind == "causal" and gen.shape[1] > width and torch.equal(gen[:, :width], enc["input_ids"]):
                    gen = gen[:, width:]  # HF generate from input_ids echoes the prompt; DePT's does not
                for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
                    preds[i] = match_label(text)
            if has_labels:
                n = len(chunk)
                loss_sum, loss_n = loss_sum + float(out.loss) * n, loss_n + n
        return preds, (loss_sum / loss_n if loss_n else None)
    finally:
        model.train(was_training)


class StepgamePredictor:
    """StepGame answers from a model of one kind: ``predict(rows)`` or ``predict_stepgame(stories, questions)``.

    Returns label names (``LABELS``); a generated answer that names no label gives None.
    """

    def __init__(self, model, tokenizer, kind: str, max_length: int, batch_size: int = 32):
        self.model, self.tokenizer, self.kind = model, tokenizer, kind
        self.max_length, self.batch_size = max_length, batch_size

    def predict_stepgame(self, stories: Sequence, questions: Sequence[str]) -> list[str | None]:
        if len(stories) != len(questions):
            raise DataError(f"got {len(stories)} stories and {len(questions)} questions")
        rows = [{"story": s, "question": q} for s, q in zip(stories, questions)]
        return self.predict(rows)

    def predict(self, rows: Sequence[dict]) -> list[str | None]:
        rows = check_rows(rows)
        if not rows:
            return []
        examples, cut = encode(rows, self.tokenizer, self.kind, self.max_length, with_labels=False)
        if cut:
            log.warning("%d of %d inputs were longer than %d tokens; their stories were cut from the start",
                        cut, len(rows), self.max_length)
        preds, _ = run_model(self.model, self.tokenizer, self.kind, examples, self.batch_size, with_loss=False)
        return preds


def final_stepgame_metrics(rows: list[dict], preds: list, out_dir: Path) -> dict[str, float]:
    """The StepGame evaluator's accuracy per k / hops / clean-noisy, tables and plot written to
    ``out_dir``, metrics prefixed ``stepgame_``."""
    from raypost.stepgame.evaluate import evaluate, write_results

    result = evaluate(rows, preds)
    write_results(result, out_dir)
    return {f"stepgame_{k}": v for k, v in result.metrics().items()}


# ---- the one evaluator every recipe wires in ---------------------------------------------------
Predict = Callable[[nn.Module, list], tuple[list, "float | None"]]


class StepgameEvaluator:
    """``evaluate(module)``: accuracy on fixed eval rows, plus the mean loss ``predict`` returns
    (``eval_loss``) and any ``extra`` metrics; ``final_evaluate(module, dir)``: accuracy per k /
    hops / clean-noisy with tables and a plot.

    ``predict(module, indices) -> (labels, mean loss or None)`` is the recipe's own way of
    answering the rows at ``indices`` (a classifier head, generation, a verbalizer). Every rank
    calls ``evaluate``: rank r answers rows r, r + world, ... and one ``all_gather`` gives every
    rank all the answers, so no rank idles while another evaluates.

    The loop evaluates at the last step and calls ``final_evaluate`` right after with the same
    weights, so predictions are reused while the trainable weights are unchanged. Checked by
    content (sum and sum of squares per tensor), not by tensor versions: optimizers such as
    DeepSpeed's write through ``param.data``.
    """

    def __init__(self, rows: list[dict], predict: Predict, extra: Callable[[nn.Module], dict[str, float]] | None = None,
                 rank: int = 0, world_size: int = 1, gather: Callable[[object, int], list] | None = None):
        self.rows, self._predict, self._extra = rows, predict, extra
        self.rank, self.world = rank, world_size
        self._gather = gather or gather_objects
        self._last: tuple | None = None  # (weights fingerprint, predictions, loss)

    def predictions(self, module, shard: bool = True) -> tuple[list, float | None]:
        fingerprint = weights_fingerprint(module)
        fresh = self._last is not None and self._last[0] == fingerprint
        lockstep = in_lockstep(module)
        if lockstep and shard:  # ZeRO-3: each rank fingerprints its own slice; all must agree to recompute
            fresh = all(self._gather(fresh, self.world))
        if not fresh:
            if self.world > 1 and shard:
                self._last = (fingerprint, *self._sharded(module, lockstep))
            elif lockstep:  # one rank alone cannot run a model whose weights every rank holds a slice of
                raise RuntimeError("under ZeRO-3 every rank evaluates: call evaluate() on all ranks first, "
                                   "then final_evaluate() on rank 0 with the same weights")
            else:
                self._last = (fingerprint, *self._predict(module, list(range(len(self.rows)))))
        return self._last[1], self._last[2]

    def _sharded(self, module, lockstep: bool = False) -> tuple[list, float | None]:
        mine = list(range(self.rank, len(self.rows), self.world))
        # in lockstep every rank answers as many rows (so as many batches and forward passes):
        # short shards repeat a row, whose extra answers are dropped
        width = -(-len(self.rows) // self.world) if lockstep else len(mine)
        asked = mine + [mine[0] if mine else 0] * (width - len(mine))
        preds, loss = self._predict(module, asked) if asked else ([], None)
        preds = preds[:len(mine)]
        out: list = [None] * len(self.rows)
        loss_sum, loss_n = 0.0, 0
        # the loss is the mean over the rows each rank scored (a repeated row counts again)
        for indices, part, part_loss, scored in self._gather((mine, preds, loss, len(asked)), self.world):
            for i, p in zip(indices, part):
                out[i] = p
            if part_loss is not None:
                loss_sum, loss_n = loss_sum + part_loss * scored, loss_n + scored
        return out, (loss_sum / loss_n if loss_n else None)

    def evaluate(self, module) -> dict[str, float]:
        preds, loss = self.predictions(module)
        right = sum(p == r["label"] for p, r in zip(preds, self.rows))
        metrics = {"eval_accuracy": right / len(self.rows)}
        if loss is not None:
            metrics["eval_loss"] = loss
        if self._extra is not None:
            metrics.update(self._extra(module))
        return metrics

    def final_evaluate(self, module, out_dir: Path) -> dict[str, float]:
        """Rank 0 alone (it writes files): the cached predictions, else all rows here, unsharded."""
        return final_stepgame_metrics(self.rows, self.predictions(module, shard=False)[0], out_dir)


class StepgameTask:
    """Train batches for one rank, and the evaluator on the eval set (classifier, seq2seq or
    causal answers through ``run_model``).

    Every rank builds the same rows (deterministic generation or file order); batches are then
    sharded by rank.
    """

    def __init__(self, cfg: StepgameDataConfig, tokenizer, kind: str, max_length: int, *,
                 batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.cfg, self.tokenizer, self.kind, self.max_length = cfg, tokenizer, kind, max_length
        self.train_rows, self.eval_rows = load_train_rows(cfg), load_eval_rows(cfg)
        self.train_examples, self.train_cut = encode(self.train_rows, tokenizer, kind, max_length)
        self.eval_examples, self.eval_cut = encode(self.eval_rows, tokenizer, kind, max_length)
        for name, cut, n in (("train", self.train_cut, len(self.train_rows)),
                             ("eval", self.eval_cut, len(self.eval_rows))):
            if cut:
                log.warning("%d of %d %s inputs exceed %d tokens; their stories were cut from the start",
                            cut, n, name, max_length)
        self.batches = train_batches(self.train_examples, tokenizer.pad_token_id, batch_size, rank, world_size, seed)
        self.evaluator = StepgameEvaluator(
            self.eval_rows, lambda module, idx: run_model(module, tokenizer, kind, [self.eval_examples[i] for i in idx],
                                                          cfg.eval_batch_size),
            rank=rank, world_size=world_size)

    @property
    def params(self) -> dict:
        return {"train_examples": len(self.train_rows), "eval_examples": len(self.eval_rows),
                "train_truncated": self.train_cut, "eval_truncated": self.eval_cut}

    def compute_loss(self, model, batch: Batch) -> torch.Tensor:
        return model(**batch).loss

    def evaluate(self, module) -> dict[str, float]:
        return self.evaluator.evaluate(module)

    def final_evaluate(self, module, out_dir: Path) -> dict[str, float]:
        return self.evaluator.final_evaluate(module, out_dir)


__all__ = ["StepgameDataConfig", "StepgameTask", "StepgamePredictor", "load_rows", "encode", "collate",
           "train_batches", "run_model", "answer_budget", "answer_ids", "parse_k_list", "StepgameEvaluator", "data_paths",
           "resolve_data_paths", "load_train_rows", "load_eval_rows", "check_rows", "final_stepgame_metrics",
           "ANSWER_PREFIX", "TASK_FORMAT", "KINDS", "GENERATE", "TRAIN_SPLIT", "EVAL_SPLIT"]
