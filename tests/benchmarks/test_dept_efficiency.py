"""``benchmarks/dept_efficiency.py --smoke``: every model x split is measured, and the report is the data.

The ratios in the JSON and the README table must be the ratios of the medians of the recorded
samples, so a report can never drift from the numbers behind it.
"""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from raypost.methods.dept import rank_for_budget

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dept_efficiency.py"
OTHER_BLOCK = "<!-- other_benchmark:begin -->\nkept as is\n<!-- other_benchmark:end -->\n"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dept_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    readme = out / "README.md"
    readme.write_text(f"# Benchmarks\n\nintro\n\n{bench.BEGIN}\nstale table\n{bench.END}\n\n{OTHER_BLOCK}")
    returned = bench.main(["--smoke", "--out-dir", str(out), "--readme", str(readme)])
    data = json.loads((out / "dept_efficiency.json").read_text())
    return {"data": data, "returned": returned, "readme": readme.read_text(),
            "markdown": (out / "dept_efficiency.md").read_text()}


def test_every_model_and_split_is_measured_with_positive_numbers(bench, run):
    data = run["data"]
    settings = data["meta"]["settings"]
    assert [res["model"] for res in data["results"]] == list(bench.DEFAULT_MODELS)
    assert {res["kind"] for res in data["results"]} == {"seq2seq", "causal", "classifier"}
    for res in data["results"]:
        budget, s, d = res["budget"], res["s"], res["d"]
        assert [row["m"] for row in res["splits"]] == settings["prompt_lengths"]
        assert budget == settings["prompt_lengths"][0] * d
        for i, row in enumerate(res["splits"]):
            assert row["baseline"] == (i == 0)
            assert row["r"] == rank_for_budget(budget, row["m"], s, d)  # same budget, r derived
            assert 0 < row["trainable_params"] <= budget
            for key in ("train_step_s", "train_step_cpu_s", "infer_s"):
                assert len(row[key]["samples"]) == settings["repeats"]
            assert len(row["step_peak_mb"]["samples"]) == settings["memory_repeats"]
            for key, _ in bench.METRICS:
                assert bench.value(row, key) > 0, (res["model"], row["m"], key)
                if isinstance(row[key], dict):
                    assert all(x > 0 for x in row[key]["samples"]), (res["model"], row["m"], key)
            assert row["resident_mb"] > 0
        assert res["splits"][0]["r"] == 0  # PT


def test_medians_and_ratios_are_the_data(bench, run):
    for res in run["data"]["results"]:
        pt = res["splits"][0]
        for row in res["splits"]:
            for key in ("train_step_s", "train_step_cpu_s", "infer_s", "step_peak_mb"):
                assert row[key]["median"] == statistics.median(row[key]["samples"])
            assert row["tokens_per_s"] == pytest.approx(res["batch_size"] * res["s"] / row["train_step_s"]["median"])
            assert row["total_peak_mb"] == pytest.approx(row["resident_mb"] + row["step_peak_mb"]["median"])
            expected = {ratio: bench.value(row, key) / bench.value(pt, key) for key, ratio in bench.METRICS}
            expected["train_step_cpu_time"] = row["train_step_cpu_s"]["median"] / pt["train_step_cpu_s"]["median"]
            for ratio, value in expected.items():
                assert row["ratio_vs_pt"][ratio] == pytest.approx(value, rel=1e-12), (res["model"], row["m"], ratio)
    assert run["returned"] == run["data"]  # what main() returns is what it wrote


def test_readme_block_is_the_generated_table(bench, run):
    readme, markdown = run["readme"], run["markdown"]
    assert f"{bench.BEGIN}\n{markdown}{bench.END}" in readme
    assert "stale table" not in readme
    assert readme.startswith("# Benchmarks\n\nintro\n\n") and readme.endswith(OTHER_BLOCK)  # other blocks kept
    for res in run["data"]["results"]:
        for row in res["splits"]:
            rt = row["ratio_vs_pt"]
            line = next(x for x in markdown.splitlines()
                        if x.startswith(f"| {res['model']} (") and f"| {row['m']} / {row['r']}" in x)
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[4] == f"{rt['train_step_time']:.3f}" and cells[5] == f"{rt['train_step_cpu_time']:.3f}"
            assert cells[7] == f"{rt['tokens_per_s']:.3f}" and cells[9] == f"{rt['step_peak_memory']:.3f}"
            assert cells[11] == f"{rt['total_peak_memory']:.3f}" and cells[13] == f"{rt['infer_latency']:.3f}"


def test_rerun_replaces_the_block_and_bad_flags_are_errors(bench, tmp_path):
    from raypost.errors import ConfigError

    readme = tmp_path / "README.md"
    bench.C.update_readme(readme, "dept_efficiency", "one\n")
    bench.C.update_readme(readme, "dept_efficiency", "two\n")
    assert readme.read_text() == f"{bench.BEGIN}\ntwo\n{bench.END}\n"
    with pytest.raises(ConfigError, match="prompt-lengths"):
        bench.parse_args(["--prompt-lengths", "100"])
    with pytest.raises(ConfigError, match="kind"):
        bench.model_spec("t5=regression")
