"""The full fine-tuning recipe without Ray: setup() in-process (rank 0 of 1), a torch optimizer
over its one parameter group: every weight is trainable and changes, the loss drops, the saved
folder is the whole model and loads back with identical predictions, bad input by name."""

import pytest
import torch

from raypost.cli import main
from raypost.errors import ConfigError
from raypost.inference import load_predictor
from raypost.recipes import finetune
from raypost.stepgame import task as st

TINY = {"classifier": "tiny:bert", "causal": "tiny:gpt2"}


def flat(model, **kw):
    return {"method": "finetune", "model": model, "batch_size": 4, "max_input_length": 224, "train_k": "1",
            "train_per_k": 16, "eval_k": "1", "eval_per_k": 4, "ft_lr": 3e-3, "seed": 0} | kw


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.mark.parametrize("kind", list(TINY))
def test_every_weight_trains_and_the_saved_model_predicts_the_same(kind, tmp_path):
    setup = finetune.setup(flat(TINY[kind]), 0, 1)
    model = setup.model
    total = sum(p.numel() for p in model.parameters())
    assert setup.params["trainable_params"] == total and all(p.requires_grad for p in model.parameters())
    (group,) = setup.param_groups
    assert group["lr"] == 3e-3 and sum(p.numel() for p in group["params"]) == total

    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = next(setup.train_batches)
    model.eval()
    with torch.no_grad():
        loss_before = float(setup.compute_loss(model, batch))
    optimizer = torch.optim.AdamW(setup.param_groups)
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        setup.compute_loss(model, batch).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert float(setup.compute_loss(model, batch)) < loss_before
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2  # the base model's weights move, not just a head

    metrics = setup.evaluate(model)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    setup.save_adapter(model, tmp_path / "adapter")
    predictor = load_predictor(tmp_path / "adapter")
    rows = st.load_rows("generate", [1], 4, noise=False, seed=0, split="eval")
    expected, _ = st.run_model(model, predictor.tokenizer, kind, st.encode(rows, predictor.tokenizer, kind, 224)[0],
                               batch_size=4)
    assert predictor.predict(rows) == expected


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="ft_lr=0.0 must be positive"):
        finetune.setup(flat("tiny:bert", ft_lr=0.0), 0, 1)
    with pytest.raises(ConfigError, match="max_input_length=9999 exceeds model 'tiny:bert'"):
        finetune.setup(flat("tiny:bert", max_input_length=9999), 0, 1)


def test_the_default_space_is_valid_and_the_cli_knows_the_method(capsys):
    from raypost.tune.space import default_space_file, load_space

    space = load_space(default_space_file("finetune"), "finetune")
    assert space.method == "finetune" and set(space.search) == {"ft_lr"}
    assert main(["train", "finetune", "--help-config"]) == 0
    assert "ft_lr" in capsys.readouterr().out
