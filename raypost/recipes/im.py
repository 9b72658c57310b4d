"""Instruction Modelling on StepGame (or any instruction JSONL), trained by the shared DeepSpeed loop.
See docs/im.md for the method.

Model: a causal (or seq2seq) LM from ``load_base``, made trainable by ``make_trainable``: ``full``
(every weight; ZeRO shards its optimizer state via ``zero_stage``), ``lora`` (PEFT) or ``dept``.
Data: ``im_train_data`` = ``stepgame`` (StepGame train rows written as instructions with
``raypost.stepgame.to_instruction_rows``) or a JSONL file of instruction rows; sharded by rank.
Loss: ``im_loss`` (instruction tokens weigh ``instruction_weight``, output tokens 1, template 0).
Eval: ``eval_output_loss`` = output-only loss on held-out instructions (``im_eval_data``), the
same on as many training rows (``train_output_loss``: the gap is the overfitting), and
``eval_accuracy`` = StepGame written as instructions (story + question -> relation word): the
model generates after ``<|assistant|>`` and ``match_label`` reads the relation. At the end,
StepGame accuracy per k / hops is written as tables and a plot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from raypost.batches import sharded_batches
from raypost.configs import check, check_range, field, split_flat
from raypost.errors import ConfigError, DataError
from raypost.methods.dept import DeptConfig, check_readout
from raypost.methods.im import (
    OUTPUT,
    Example,
    ImConfig,
    collate,
    encode_example,
    example_from_row,
    im_loss,
    load_instruction_jsonl,
    make_trainable,
    output_only_loss,
    resolve_chat_template,
    truncate,
)
from raypost.recipes.base import AdapterMeta, Recipe, TrialSetup, save_whole_model, trainable_count
from raypost.recipes.train_config import TrainConfig
from raypost.stepgame.convert import INSTRUCTION, to_instruction_rows
from raypost.stepgame.labels import LABELS, format_input, label_word, story_list
from raypost.stepgame.task import (
    StepgameDataConfig,
    StepgameEvaluator,
    StepgamePredictor,
    answer_budget,
    check_rows,
    load_eval_rows,
    load_train_rows,
    resolve_data_paths,
    run_model,
)

log = logging.getLogger(__name__)

STEPGAME = "stepgame"
IM_KINDS = ("causal", "seq2seq")
TASK_FORMAT = 1  # bump when the StepGame instruction prompt changes: adapters record what they learnt
WEIGHTS = {
    "full": "full model weights (save_pretrained): full fine-tuning trains every weight, so the "
            "adapter is the whole model; load_predictor needs no base weights, only its tokenizer",
    "lora": "LoRA adapter only (PEFT save_pretrained: adapter_config.json + adapter_model.safetensors); "
            "load_predictor puts it on the base model",
    "dept": "DePT adapter only (adapter.safetensors + adapter_config.json); load_predictor puts it on the "
            "base model",
}


@dataclass
class ImDataConfig:
    """Instruction data. StepGame rows (train_data, train_k, ..., eval_data, eval_k, ...) come from
    ``StepgameDataConfig``; the StepGame eval set always gives ``eval_accuracy``."""

    im_train_data: str = field(STEPGAME, help="'stepgame' (StepGame train rows written as instructions) or an "
                                              "instruction JSONL file ({instruction, input?, output} or "
                                              "{messages}).")
    im_eval_data: str = field(STEPGAME, help="Held-out instructions for eval_output_loss: 'stepgame' (the "
                                             "StepGame eval rows as instructions) or an instruction JSONL file.")
    im_eval_max_rows: int = field(200, help="At most this many held-out rows of im_eval_data (0 = all).")

    def __post_init__(self):
        for key in ("im_train_data", "im_eval_data"):
            value = getattr(self, key)
            check(isinstance(value, str) and value.strip() != "", f"{key} is empty; give 'stepgame' or a JSONL file")
            if value != STEPGAME:
                check(Path(value).expanduser().is_file(),
                      f"{key}: {value} does not exist (give 'stepgame' or an instruction JSONL file)")
        check_range("im_eval_max_rows", self.im_eval_max_rows, 0)


CONFIG_CLASSES = (TrainConfig, ImConfig, DeptConfig, StepgameDataConfig, ImDataConfig)


def resolve_kind(model: str) -> str:
    """IM trains language models: causal (decoders) or seq2seq (encoder-decoders)."""
    from raypost.models.dims import default_kind

    kind = default_kind(model)
    if kind not in IM_KINDS:
        raise ConfigError(f"IM trains causal or seq2seq language models; model {model!r} is an encoder "
                          f"(kind {kind!r}); pass e.g. --set model=tiny:gpt2 or a causal LM's HF id")
    return kind


# ---- data -----------------------------------------------------------------------------------
def stepgame_examples(rows: Sequence[dict], name: str) -> list[Example]:
    """StepGame rows as instruction examples (``to_instruction_rows``), each named ``name:i``."""
    return [example_from_row(r, f"{name}:{i}") for i, r in enumerate(to_instruction_rows(list(rows)))]


def instruction_examples(source: str, stepgame_rows: Sequence[dict], name: str, limit: int = 0) -> list[Example]:
    examples = stepgame_examples(stepgame_rows, name) if source == STEPGAME else load_instruction_jsonl(source)
    return examples[:limit] if limit else examples


def encode_counted(examples: Sequence[Example], tokenizer, chat_template: str, max_seq_length: int):
    """Encoded rows and how many lost their oldest tokens to ``max_seq_length`` (never output tokens)."""
    out, cut = [], 0
    for example in examples:
        full = encode_example(example, tokenizer, chat_template)
        short = truncate(full, max_seq_length)
        cut += len(short.input_ids) < len(full.input_ids)
        out.append(short)
    return out, cut


def stepgame_prompts(rows: Sequence[dict], tokenizer, kind: str, chat_template: str,
                     max_seq_length: int) -> tuple[list[dict], int]:
    """StepGame rows as generation prompts in the training format: the template up to where the
    output starts (after ``<|assistant|>\\n``). Too-long prompts lose their oldest tokens (the
    instruction first, then the story's start, never the question). Returns ``run_model`` examples
    and how many prompts were cut. Rows need story and question; a label is not needed."""
    room = max_seq_length - (answer_budget(tokenizer, "causal") if kind == "causal" else 0)
    check(room >= 8, f"max_seq_length={max_seq_length} leaves {room} tokens for a StepGame prompt; raise it")
    out, cut = [], 0
    for i, row in enumerate(rows):
        example = example_from_row({"instruction": INSTRUCTION, "input": format_input(story_list(row["story"]),
                                                                                      row["question"]),
                                    "output": label_word(LABELS[0])}, f"stepgame-eval:{i}")
        enc = encode_example(example, tokenizer, chat_template)
        prompt = enc.input_ids[:enc.segments.index(OUTPUT)]
        if len(prompt) > room:
            prompt, cut = prompt[len(prompt) - room:], cut + 1
        out.append({"input_ids": prompt, "prompt_len": len(prompt)} if kind == "causal" else {"input_ids": prompt})
    return out, cut


def instruction_batches(rows, pad_id: int, instruction_weight: float, kind: str, batch_size: int, rank: int,
                        world_size: int, seed: int):
    """This rank's IM micro-batches forever (``sharded_batches`` with the IM ``collate``)."""
    return sharded_batches(rows, lambda chunk: collate(chunk, pad_id, instruction_weight, kind), batch_size, rank,
                           world_size, seed, what="training rows", hint="add rows (train_per_k or the JSONL file)")


# ---- evaluation -----------------------------------------------------------------------------
# ---- the recipe -----------------------------------------------------------------------------
def setup(flat: dict, rank: int, world_size: int, *, resuming: bool = False, device=None) -> TrialSetup:
    from raypost.models import load_base

    train, im_cfg, dept_cfg, data_cfg, im_data = split_flat(flat, *CONFIG_CLASSES)
    kind = resolve_kind(train.model)
    base = load_base(train.model, kind, seed=train.seed)
    tokenizer, hf_config = base.tokenizer, base.model.config
    torch.manual_seed(train.seed)  # LoRA / DePT initialisation: identical on every rank
    model, param_groups = make_trainable(base, im_cfg, dept_cfg if im_cfg.trainable == "dept" else None)

    # every rank builds the same rows (deterministic generation or file order); batches are sharded
    eval_rows = load_eval_rows(data_cfg)
    train_sg = load_train_rows(data_cfg) if im_data.im_train_data == STEPGAME else []
    train_examples = instruction_examples(im_data.im_train_data, train_sg, "stepgame-train")
    heldout_examples = instruction_examples(im_data.im_eval_data, eval_rows, "stepgame-eval", im_data.im_eval_max_rows)
    train_rows, train_cut = encode_counted(train_examples, tokenizer, im_cfg.chat_template, im_cfg.max_seq_length)
    heldout, heldout_cut = encode_counted(heldout_examples, tokenizer, im_cfg.chat_template, im_cfg.max_seq_length)
    prompts, prompt_cut = stepgame_prompts(eval_rows, tokenizer, kind, im_cfg.chat_template, im_cfg.max_seq_length)
    for name, cut, n in (("train", train_cut, len(train_rows)), ("held-out", heldout_cut, len(heldout)),
                         ("StepGame eval prompt", prompt_cut, len(prompts))):
        if cut:
            log.warning("%d of %d %s rows exceed max_seq_length=%d; their oldest tokens were cut",
                        cut, n, name, im_cfg.max_seq_length)
    batch_size = data_cfg.eval_batch_size
    train_probe = train_rows[::max(1, len(train_rows) // max(1, len(heldout)))][:len(heldout)]
    evaluation = StepgameEvaluator(  # accuracy of generated answers; the held-out output loss beside it
        eval_rows, lambda module, idx: (run_model(module, tokenizer, kind, [prompts[i] for i in idx], batch_size,
                                                  with_loss=False)[0], None),
        # output-only loss on held-out rows and on as many training rows, spread over the set: the gap
        # between them is the overfitting the IM paper argues the instruction loss reduces
        extra=lambda module: {"eval_output_loss": output_only_loss(module, heldout, tokenizer.pad_token_id,
                                                                   batch_size, kind),
                              "train_output_loss": output_only_loss(module, train_probe, tokenizer.pad_token_id,
                                                                    batch_size, kind)},
        rank=rank, world_size=world_size)
    batches = instruction_batches(train_rows, tokenizer.pad_token_id, im_cfg.instruction_weight, kind,
                                  train.batch_size, rank, world_size, train.seed)

    def compute_loss(engine, batch):  # hf_config: the DeepSpeed engine's .config is its own, not HF's
        return im_loss(engine, batch, kind, hf_config)

    n_trainable = trainable_count(model)

    def save_adapter(module, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if im_cfg.trainable == "dept":
            module.save_adapter(directory)
        elif im_cfg.trainable == "full":
            save_whole_model(module, directory)
        else:  # a PeftModel writes its LoRA adapter only
            module.save_pretrained(directory, safe_serialization=True)
        AdapterMeta("im", train.model, kind, n_trainable, task=STEPGAME, task_format=TASK_FORMAT, labels=list(LABELS),
                    settings={"trainable": im_cfg.trainable, "weights": WEIGHTS[im_cfg.trainable],
                              "chat_template": resolve_chat_template(im_cfg.chat_template, tokenizer),
                              "max_seq_length": im_cfg.max_seq_length,
                              "instruction_weight": im_cfg.instruction_weight,
                              "instruction": INSTRUCTION}).write(directory)

    params = {"trainable_params": n_trainable, "im_kind": kind, "im_train_rows": len(train_rows),
              "im_train_truncated": train_cut, "im_heldout_rows": len(heldout), "im_heldout_truncated": heldout_cut,
              "train_examples": len(train_rows), "eval_examples": len(eval_rows), "eval_truncated": prompt_cut}
    if im_cfg.trainable == "dept":
        params.update(model.summary())
    return TrialSetup(model=model, param_groups=param_groups, train_batches=batches, compute_loss=compute_loss,
                      evaluate=evaluation.evaluate, save_adapter=save_adapter,
                      final_evaluate=evaluation.final_evaluate, params=params)


# ---- search-space limits, checked on the driver before any trial starts ------------------------
def prepare_fixed(fixed: dict, search: dict) -> None:
    """Data files exist and every instruction row is usable (errors name the file and line);
    relative paths become absolute, as trial workers may run elsewhere. Data is not searchable."""
    resolve_data_paths(fixed)
    for key in ("im_train_data", "im_eval_data"):
        check(key not in search, f"search.{key}: data files cannot be searched; set them in fixed")
        value = fixed.get(key)
        if isinstance(value, str) and value != STEPGAME:
            path = Path(value).expanduser()
            check(path.is_file(), f"fixed.{key}: {value} does not exist")
            load_instruction_jsonl(path)  # DataError naming file:line of the first bad row
            fixed[key] = str(path.resolve())


def check_point(flat: dict) -> None:
    """IM's limits at one point of a space: the model is a causal or seq2seq LM; seq2seq only with
    instruction_weight=0; DePT's max_input_length holds max_seq_length; rows fit the model's positions."""
    from raypost.models.dims import max_positions

    train, im_cfg, dept_cfg, _, _ = split_flat(flat, *CONFIG_CLASSES)
    kind = resolve_kind(train.model)
    if kind == "seq2seq" and im_cfg.instruction_weight != 0:
        raise ConfigError(f"instruction_weight={im_cfg.instruction_weight} needs a causal LM: {train.model!r} is "
                          "an encoder-decoder, which reads the instruction in its encoder; use instruction_weight=0")
    length = im_cfg.max_seq_length
    if im_cfg.trainable == "dept":
        check_readout(dept_cfg.readout, kind, train.model)
        if length > dept_cfg.max_input_length:
            raise ConfigError(f"max_seq_length={length} exceeds DePT's max_input_length="
                              f"{dept_cfg.max_input_length}; raise max_input_length")
        length += dept_cfg.prompt_length
    positions = max_positions(train.model)
    if positions is not None and length > positions:
        raise ConfigError(f"max_seq_length{' + prompt_length' if im_cfg.trainable == 'dept' else ''} = {length} "
                          f"exceeds the {positions} positions of {train.model!r}")


# ---- inference -----------------------------------------------------------------------------
class InstructionStepgamePredictor(StepgamePredictor):
    """StepGame answers from an IM-trained LM, asked in its training format (the instruction
    template); ``predict(rows)`` / ``predict_stepgame(stories, questions)`` -> label names (None
    where the generated answer names no relation)."""

    def __init__(self, model, tokenizer, kind: str, max_seq_length: int, chat_template: str = "paper",
                 batch_size: int = 32):
        super().__init__(model, tokenizer, kind, max_seq_length, batch_size=batch_size)
        self.chat_template = chat_template

    def predict(self, rows: Sequence[dict]) -> list[str | None]:
        rows = check_rows(rows)
        if not rows:
            return []
        prompts, cut = stepgame_prompts(rows, self.tokenizer, self.kind, self.chat_template, self.max_length)
        if cut:
            log.warning("%d of %d prompts exceeded %d tokens; their oldest tokens were cut",
                        cut, len(rows), self.max_length)
        preds, _ = run_model(self.model, self.tokenizer, self.kind, prompts, self.batch_size, with_loss=False)
        return preds


def load_predictor(adapter_dir, meta: AdapterMeta, model: str | None = None,
                   batch_size: int = 32) -> InstructionStepgamePredictor:
    """A predictor from a saved IM folder. LoRA and DePT adapters go onto the recorded base model
    (or ``model``: the same weights under another name); a full fine-tune carries all its weights,
    so ``model`` then only names where the tokenizer comes from."""
    import transformers as tf

    from raypost.models import load_base, load_tokenizer, pick_device

    directory = Path(adapter_dir)
    kind, name, trainable = meta.kind, model or meta.model, meta.get("trainable", "lora")
    if trainable == "full":
        auto = tf.AutoModelForCausalLM if kind == "causal" else tf.AutoModelForSeq2SeqLM
        tokenizer, net = load_tokenizer(name), auto.from_pretrained(directory)
    elif trainable == "lora":
        from peft import PeftModel

        base = load_base(name, kind)
        tokenizer, net = base.tokenizer, PeftModel.from_pretrained(base.model, directory)
    elif trainable == "dept":
        from raypost.methods.dept import DeptModel

        base = load_base(name, kind)
        tokenizer, net = base.tokenizer, DeptModel.load_adapter(base, directory)
    else:
        raise DataError(f"{directory}: unknown trainable {trainable!r} in its adapter description")
    return InstructionStepgamePredictor(net.to(pick_device()).eval(), tokenizer, kind, meta.get("max_seq_length"),
                                        meta.get("chat_template", "paper"), batch_size=batch_size)


RECIPE = Recipe(name="im", config_classes=CONFIG_CLASSES, setup=setup,
                metrics=("eval_accuracy", "eval_output_loss", "train_output_loss"),
                check_point=check_point, prepare_fixed=prepare_fixed, load_predictor=load_predictor,
                task_format=TASK_FORMAT,
                summary="instruction modelling: loss on instruction tokens too, weighted by lambda (LMs)")

__all__ = ["RECIPE", "CONFIG_CLASSES", "ImDataConfig", "InstructionStepgamePredictor", "setup", "check_point",
           "load_predictor", "stepgame_examples", "stepgame_prompts", "resolve_kind"]
