"""``DeptModel``: a frozen base model plus DePT's soft prompt P and low-rank offset A @ B.

    inputs_embeds = [ P ; E(x) + scaling * (A @ B)[pos] ]      P: m x d, A: s x r, B: r x d

An encoder classifier reads its input one of four ways (``DeptConfig.readout``): the frozen
pooler on the first prompt vector (PEFT), the prompt inserted after [CLS] so the pooler reads
[CLS], the mean of the real tokens' last hidden states, or [CLS] through a trained pooler.

Row j of the offset goes to the j-th real (unmasked) token of an input. With right padding that
is tensor position j, i.e. "add the first L rows", which equals the paper's "pad to s, add all s
rows": padded positions are masked out, so what they receive never reaches a real token. Counting
real tokens (not tensor slots) also keeps left-padded batches (causal generation) correct.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from raypost.configs import check
from raypost.distributed import whole_weights
from raypost.errors import ConfigError, DataError
from raypost.methods.dept.budget import dept_param_count, rank_for_budget
from raypost.methods.dept.config import DEFAULT_READOUT, DeptConfig, check_readout
from raypost.models import BaseModel

HEAD_NAMES = ("classifier", "score")  # the modules PEFT's PeftModelForSequenceClassification trains
LABELS_WITH_PROMPT = ("causal", "masked_lm")  # labels align with the inputs, so prompt slots get -100
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"


class DeptModel(nn.Module):
    def __init__(self, base: BaseModel, config: DeptConfig):
        super().__init__()
        self.dept_config = config  # not `config`: HF-aware code reads `model.config` as the HF config
        self.base, self.kind, self.base_name = base.model, base.kind, base.name
        d, m, s = base.hidden_size, config.prompt_length, config.max_input_length
        r = config.lowrank_rank if config.param_budget is None else rank_for_budget(config.param_budget, m, s, d)
        self.hidden_size, self.prompt_length, self.rank, self.max_input_length = d, m, r, s
        self.scaling = config.lowrank_alpha / math.sqrt(r) if r else 0.0

        self.base.requires_grad_(False)
        self.head_name = self._find_head() if self.kind == "classifier" else None
        self.readout = self._resolve_readout(config.readout)
        if self.head is not None:
            self.head.requires_grad_(True)  # a fresh task head must learn (as in PEFT)
        if self.readout == "cls_pooler":
            self.pooler.requires_grad_(True)

        # Parameters exist only when their size is non-zero: no empty tensors for optimizers/ZeRO.
        emb = self.base.get_input_embeddings().weight
        gen = torch.Generator().manual_seed(config.adapter_init_seed)
        with whole_weights(self.base, [emb]):  # a base ZeRO-3 partitioned as it loaded: read the whole table
            self.prompt = nn.Parameter(self._initial_prompt(base.tokenizer, emb, gen)) if m else None
        self.lowrank_A = self.lowrank_B = None
        if r:
            a = torch.empty(s, r)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)  # nn.Linear's default init
            self.lowrank_A = nn.Parameter(a.to(emb))  # .to(tensor): its dtype and device, partitioned or not
            self.lowrank_B = nn.Parameter(torch.zeros(r, d).to(emb))  # B = 0: start exactly at prompt tuning

    # ---- set-up ---------------------------------------------------------------------------
    def _find_head(self) -> str:
        for name in HEAD_NAMES:
            if isinstance(getattr(self.base, name, None), nn.Module):
                return name
        raise ConfigError(f"classifier {self.base_name!r} has no head module named {' or '.join(HEAD_NAMES)}")

    def _resolve_readout(self, readout: str) -> str | None:
        check_readout(readout, self.kind, self.base_name)
        if self.kind != "classifier":
            return None
        readout = DEFAULT_READOUT if readout == "auto" else readout
        if readout == "mean":
            check(isinstance(self.head, nn.Linear) and hasattr(self.base, "dropout"),
                  f"readout='mean' needs a BERT-style linear head; {self.base_name!r} has "
                  f"{type(self.head).__name__}: use readout=cls or pooler")
        if readout == "cls_pooler":
            check(isinstance(getattr(self.base.base_model, "pooler", None), nn.Module),
                  f"readout='cls_pooler' needs a pooler; {self.base_name!r} has none: use readout=cls or mean")
        return readout

    @property
    def head(self) -> nn.Module | None:
        return getattr(self.base, self.head_name) if self.head_name else None

    @property
    def pooler(self) -> nn.Module | None:
        return self.base.base_model.pooler if self.readout == "cls_pooler" else None

    def head_modules(self) -> list[tuple[str, nn.Module]]:
        """What trains beside P, A and B: the classifier head (and the pooler for cls_pooler)."""
        out = [("head", self.head)] if self.head is not None else []
        return out + ([("pooler", self.pooler)] if self.pooler is not None else [])

    def _initial_prompt(self, tokenizer, emb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        m, cfg = self.prompt_length, self.dept_config
        if cfg.prompt_init == "text":
            # PEFT's TEXT init: special tokens included (a BERT prompt then starts at [CLS], which
            # the pooler reads), repeated to fill m, cut to m
            ids = tokenizer(cfg.prompt_init_text)["input_ids"]
            check(len(ids) > 0, f"prompt_init_text={cfg.prompt_init_text!r} tokenizes to 0 tokens")
            ids = torch.tensor((ids * math.ceil(m / len(ids)))[:m])
        else:  # tokens the tokenizer can produce (some models pad the embedding matrix)
            ids = torch.randint(min(len(tokenizer), emb.shape[0]), (m,), generator=gen)
        return emb.detach()[ids.to(emb.device)].clone()

    # ---- forward --------------------------------------------------------------------------
    def _offset(self, positions: torch.Tensor) -> torch.Tensor:
        """scaling * (A @ B)[positions], computed on the rows needed only."""
        return self.scaling * (self.lowrank_A[positions] @ self.lowrank_B)

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, at: int = 0):
        """Input embeddings with the offset added and the prompt inserted at position ``at`` (0:
        prepended; 1: after [CLS]), and the matching mask."""
        batch, length = input_ids.shape
        if length > self.max_input_length:
            raise DataError(f"input length {length} exceeds max_input_length={self.max_input_length} "
                            "(A has one row per input position); truncate inputs when tokenizing")
        embeds = self.base.get_input_embeddings()(input_ids)
        if self.rank:
            if attention_mask is None:
                positions = torch.arange(length, device=input_ids.device).expand(batch, length)
            else:  # j-th real token -> row j; pads get a neighbour's row but are masked out
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            embeds = embeds + self._offset(positions)
        if self.prompt_length:
            prompt = self.prompt.to(embeds.dtype).expand(batch, -1, -1)
            embeds = torch.cat([embeds[:, :at], prompt, embeds[:, at:]], dim=1)
            if attention_mask is not None:
                attention_mask = self._pad_prompt(attention_mask, 1, at)
        return embeds, attention_mask

    def _pad_prompt(self, tensor: torch.Tensor, value: int, at: int = 0) -> torch.Tensor:
        fill = tensor.new_full((tensor.shape[0], self.prompt_length), value)
        return torch.cat([tensor[:, :at], fill, tensor[:, at:]], dim=1)

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        """The base model's output on ``[P ; E(x) + offset]``: ``.logits`` (and ``.loss`` with labels).

        Causal and masked-LM logits include the m prompt positions first (slice ``[:, m:]``).
        """
        if kwargs.get("position_ids") is not None:
            raise ValueError("DePT does not take position_ids: the prompt shifts every position by m")
        if self.readout in ("cls", "cls_pooler", "mean"):
            return self._classify(input_ids, attention_mask, labels, **kwargs)
        embeds, attention_mask = self._embed(input_ids, attention_mask)
        if self.prompt_length:
            if labels is not None and self.kind in LABELS_WITH_PROMPT:
                labels = self._pad_prompt(labels, -100)  # no loss on prompt slots (as PEFT for causal LMs)
            if kwargs.get("token_type_ids") is not None:
                kwargs["token_type_ids"] = self._pad_prompt(kwargs["token_type_ids"], 0)  # as PEFT
        return self.base(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    def _classify(self, input_ids, attention_mask=None, labels=None, **kwargs):
        """Encoder classifiers read by ``cls``/``cls_pooler`` (prompt after [CLS], the base's own
        pooler + head on [CLS]) or ``mean`` (prompt first, head on the mean of the real tokens)."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        at = 0 if self.readout == "mean" else 1
        real = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        embeds, mask = self._embed(input_ids, real, at=at)
        if kwargs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = self._pad_prompt(kwargs["token_type_ids"], 0, at)
        if at == 1:
            return self.base(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)
        hidden = self.base.base_model(inputs_embeds=embeds, attention_mask=mask, **kwargs).last_hidden_state
        hidden = hidden[:, self.prompt_length:]  # the input's own positions, prompt left out
        weights = real.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        logits = self.head(self.base.dropout(pooled))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """``base.generate`` on the DePT inputs. Causal LMs return the new tokens only (HF's rule
        for ``inputs_embeds``); seq2seq returns the decoder tokens. Generated causal tokens get
        their offset rows too, as the answer tokens did in training."""
        check(self.kind in ("causal", "seq2seq"), f"generate needs a causal or seq2seq model, not kind={self.kind!r}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # P, A and B are used outside forward() here, so under ZeRO-3 no hook gathers them: gather them
        with whole_weights(self, list(self.parameters(recurse=False))):
            return self._generate(input_ids, attention_mask, **kwargs)

    def _generate(self, input_ids, attention_mask, **kwargs):
        embeds, attention_mask = self._embed(input_ids, attention_mask)
        if self.kind == "seq2seq" or not self.rank:
            return self.base.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
        original = self.base.prepare_inputs_for_generation

        @functools.wraps(original)  # keeps the signature generate() inspects
        def prepare(*args, **kw):
            inputs = original(*args, **kw)
            ids = inputs.get("input_ids")
            if ids is not None:  # a decode step: embed the new tokens ourselves, offset included
                inputs["inputs_embeds"] = self._embed_new_tokens(ids, inputs)
                inputs["input_ids"] = None
            return inputs

        self.base.prepare_inputs_for_generation = prepare
        try:
            return self.base.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
        finally:
            del self.base.prepare_inputs_for_generation

    def _embed_new_tokens(self, ids: torch.Tensor, inputs: dict) -> torch.Tensor:
        mask, cache, new = inputs.get("attention_mask"), inputs.get("past_key_values"), ids.shape[1]
        if torch.is_tensor(mask) and mask.ndim == 2:  # counts the prompt and the new tokens, not pads
            seen = mask.long().sum(-1, keepdim=True) - self.prompt_length
        elif mask is None and cache is not None:  # HF drops an all-ones mask: no pads, so count the cache
            seen = cache.get_seq_length() + new - self.prompt_length
        else:
            raise NotImplementedError("DePT causal generation needs use_cache=True and a 2-D attention mask")
        positions = seen - new + torch.arange(new, device=ids.device)  # rows of the new real tokens
        if int(positions.max()) >= self.max_input_length:
            raise DataError(f"generation reached input position {int(positions.max())} but max_input_length="
                            f"{self.max_input_length}; lower max_new_tokens so input + output fit")
        return self.base.get_input_embeddings()(ids) + self._offset(positions.expand(ids.shape[0], new))

    # ---- training helpers -----------------------------------------------------------------
    def trainable_parameter_count(self) -> int:
        """m*d + r*(s+d), exactly (the classifier head is counted by ``head_parameter_count``)."""
        return dept_param_count(self.prompt_length, self.rank, self.max_input_length, self.hidden_size)

    def head_parameter_count(self) -> int:
        return sum(p.numel() for _, module in self.head_modules() for p in module.parameters())

    def summary(self) -> dict:
        """Derived values to log (keys differ from DeptConfig's, which are logged as given)."""
        return {"dept_m": self.prompt_length, "dept_r": self.rank, "dept_s": self.max_input_length,
                "dept_d": self.hidden_size, "dept_trainable_params": self.trainable_parameter_count(),
                "dept_head_params": self.head_parameter_count(), "dept_readout": self.readout or "words"}

    def param_groups(self) -> list[dict]:
        """AdamW groups, one learning rate each; empty groups (m=0, r=0, no head) are left out."""
        cfg = self.dept_config
        groups = [
            {"name": "prompt", "params": [self.prompt] if self.prompt_length else [], "lr": cfg.lr_prompt},
            {"name": "lowrank", "params": [self.lowrank_A, self.lowrank_B] if self.rank else [], "lr": cfg.lr_lowrank},
            {"name": "head", "params": [p for _, mod in self.head_modules() for p in mod.parameters()],
             "lr": cfg.lr_head},
        ]
        return [g for g in groups if g["params"]]

    # ---- save / load ----------------------------------------------------------------------
    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The trainable part only: P, A, B and the head's weights; never the base model."""
        tensors = {"prompt": self.prompt} if self.prompt_length else {}
        if self.rank:
            tensors.update(lowrank_A=self.lowrank_A, lowrank_B=self.lowrank_B)
        for name, module in self.head_modules():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        return tensors

    def save_adapter(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.adapter_tensors().items()}, path / ADAPTER_WEIGHTS)
        meta = {"method": "dept", "config": dataclasses.asdict(self.dept_config), "base_model": self.base_name,
                "kind": self.kind, "hidden_size": self.hidden_size, "head_module": self.head_name,
                "num_labels": getattr(self.base.config, "num_labels", None) if self.head is not None else None,
                **self.summary()}
        (path / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load_adapter(cls, base: BaseModel, directory: str | Path) -> DeptModel:
        path = Path(directory)
        check((path / ADAPTER_CONFIG).is_file(), f"no DePT adapter in {path}: {ADAPTER_CONFIG} is missing")
        meta = json.loads((path / ADAPTER_CONFIG).read_text())
        check(meta["hidden_size"] == base.hidden_size,
              f"adapter in {path} was trained at hidden size d={meta['hidden_size']} ({meta['base_model']!r}), "
              f"but base model {base.name!r} has d={base.hidden_size}")
        check(meta["kind"] == base.kind, f"adapter in {path} is for kind={meta['kind']!r}, base is {base.kind!r}")
        if meta["num_labels"] is not None:
            labels = getattr(base.model.config, "num_labels", None)
            check(labels == meta["num_labels"],
                  f"adapter in {path} has num_labels={meta['num_labels']}, base model has num_labels={labels}")
        if meta["base_model"] != base.name:  # the same weights may go by another name (hub id vs path)
            warnings.warn(f"adapter in {path} was trained on {meta['base_model']!r}, loading onto {base.name!r}")
        config = {"readout": "pooler", **meta["config"]}  # adapters saved before readout existed read position 0
        model = cls(base, DeptConfig(**config))
        saved = load_file(path / ADAPTER_WEIGHTS)
        with torch.no_grad():
            for name, tensor in model.adapter_tensors().items():
                tensor.copy_(saved[name])  # head state_dict tensors share storage with the head
        return model
