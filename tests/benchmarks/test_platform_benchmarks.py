"""The pure parts of the platform benchmarks (no Ray, no training; milliseconds): turning step
timestamps, Ray Train's logs and MLflow histories into the numbers and tables the README shows.

The Ray-based runs themselves are benchmarks, not tests: ``benchmarks/platform_overhead.py``,
``search_efficiency.py`` and ``scaling.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def common():
    return _load("_common")


@pytest.fixture(scope="module")
def po():
    return _load("platform_overhead")


@pytest.fixture(scope="module")
def se():
    return _load("search_efficiency")


@pytest.fixture(scope="module")
def sc():
    return _load("scaling")


def test_benchmarks_import_neither_ray_nor_torch(po, se, sc):
    # the scripts must stay cheap to import (the tests, --help); heavy imports happen in main()
    for name in ("platform_overhead", "search_efficiency", "scaling", "_common"):
        source = (BENCH / f"{name}.py").read_text()
        head = source.split("\ndef ", 1)[0]
        assert "import ray" not in head and "import torch" not in head, name


def test_split_intervals_separates_steps_from_evaluations(common):
    # steps of 0.1 s; after steps 2 and 4 (evaluations, eval_every=2) the loop spent 1 s more
    t, ends = 0.0, {}
    for step in range(1, 7):
        t += 0.1 + (1.0 if step - 1 in (2, 4) else 0.0)
        ends[step] = t
    iv = common.split_intervals(ends, eval_every=2, last=6)
    assert len(iv["plain"]) == 3 and len(iv["after_eval"]) == 2
    assert iv["step_s"] == pytest.approx(0.1)
    assert iv["eval_extra_s"] == pytest.approx(1.0)
    # a gap in the history (a resumed trial) is not a step
    iv = common.split_intervals({1: 0.0, 2: 0.1, 5: 9.0, 6: 9.1}, eval_every=10, last=6)
    assert iv["plain"] == pytest.approx([0.1, 0.1]) and iv["after_eval"] == []


def test_ray_train_logs_are_parsed_per_run(common):
    def rec(msg, ts, run="trial_1"):
        return json.dumps({"message": msg, "timestamp_ns": int(ts * 1e9), "run_name": run})

    lines = [rec("Requesting resources: {'CPU': 1.0} * 2", 10.0),
             rec("Requesting resources: {'CPU': 1.0} * 2", 99.0, run="other"),
             rec("Attempting to start training worker group of size 2", 11.0),
             rec("[Worker Group Initialization] 2 worker actors created in 5.22s.", 16.0),
             rec("[Worker Group Initialization] Train context initialized on workers in 4.47s.", 20.5),
             rec("Rank 0: Launching training function.", 21.0),
             rec("Started training worker group of size 2: ...", 21.1), "not json", rec("Shutting down 2 workers.", 40.0)]
    ev = common.parse_train_logs(lines, "trial_1")
    assert ev["requesting_resources"] == pytest.approx(10.0)
    assert ev["worker_actors_created_s"] == pytest.approx(5.22) and ev["train_context_s"] == pytest.approx(4.47)
    assert ev["train_fn_launched"] == pytest.approx(21.0) and ev["worker_group_shutdown"] == pytest.approx(40.0)

    phases = common.trial_phases(t_call=0.0, sweep_start=2.0, trial_start=5.0, ray_events=ev, first_step_end=30.5,
                                 step_s=0.5, last_step_end=35.0, trial_end=37.0, t_return=38.0)
    ordered = [v for k, v in phases.items() if k != "start-up total"][:5]
    assert ordered == pytest.approx([2.0, 3.0, 5.0, 11.0, 9.0])  # consecutive phases ...
    assert sum(ordered) == pytest.approx(phases["start-up total"]) == pytest.approx(30.0)  # ... that add up


def test_update_readme_replaces_only_its_block(common, tmp_path):
    readme = tmp_path / "README.md"
    begin, end = common.markers("platform_overhead")
    other = "<!-- scaling:begin -->\nkeep\n<!-- scaling:end -->\n"
    readme.write_text(f"# B\n\n{begin}\nold\n{end}\n\n{other}")
    common.update_readme(readme, "platform_overhead", "new\n")
    text = readme.read_text()
    assert f"{begin}\nnew\n{end}" in text and "old" not in text and text.endswith(other)
    common.update_readme(readme, "search_efficiency", "added\n")  # missing markers: appended
    assert readme.read_text().endswith("<!-- search_efficiency:begin -->\nadded\n<!-- search_efficiency:end -->\n")


def _run(label, world, startup, step, eval_extra, end, total):
    return {"label": label, "world": world, "startup_s": startup, "step_s": step, "eval_extra_s": eval_extra,
            "end_s": end, "total_s": total}


def test_platform_rows_are_medians_and_ratios_to_plain_pytorch(po):
    cfg = {"steps": 60, "eval_every": 20, "batch_size": 8}
    runs = {"a": [_run("(a)", 1, 5.0, 0.020, 0.1, 1.0, 8.0), _run("(a)", 1, 7.0, 0.030, 0.3, 3.0, 12.0)],
            "c2": [_run("(c)", 2, 40.0, 0.050, 1.2, 4.0, 50.0)]}
    rows = {r["key"]: r for r in po.summarise(runs, cfg)}
    a, c = rows["a"], rows["c2"]
    assert a["step_s"] == pytest.approx(0.025) and a["startup_s"] == pytest.approx(6.0)
    assert c["x_a"]["step_s"] == pytest.approx(2.0) and c["x_a"]["startup_s"] == pytest.approx(40 / 6)
    assert c["samples_per_s"] == pytest.approx(2 * 8 / 0.05)
    extra = c["extra_vs_a"]
    assert extra["steps_s"] == pytest.approx(60 * 0.025) and extra["evals_s"] == pytest.approx(3 * 1.0)
    assert extra["total_s"] == pytest.approx(40.0)
    report = {"meta": {"command": "python benchmarks/platform_overhead.py", "machine": {
        "nproc": 2, "cpu_model": "cpu", "python": "3.11"}, "load": {"n": 2, "min": 1.0, "median": 2.0, "max": 3.0},
        "date": "today", "elapsed_s": 1.0, "config": {**cfg, "model": "tiny:bert", "prompt_length": 20,
                                                        "lowrank_rank": 16, "max_input_length": 96, "eval_per_k": 50,
                                                        "device": "cpu"},
        "threads": 1, "rounds": 2, "ray_init_s": 7.0}, "rows": list(rows.values())}
    md = po.render_markdown(report)
    line = next(x for x in md.splitlines() if x.startswith("| (c)"))
    cells = [x.strip() for x in line.strip("|").split("|")]
    assert cells[1] == "2" and cells[3] == "6.67" and cells[5] == "2.00"


def test_max_overlap(po):
    assert po.max_overlap([[0, 10], [5, 15], [12, 20]]) == 2
    assert po.max_overlap([[0, 1], [1, 2]]) == 1


def test_search_timeline_counts_trial_steps_until_the_best(se):
    # trial 0: steps at t = 1..4, evals (step 2 at t=2.5: 1.0, step 4 at t=4.5: 0.5)
    # trial 1: steps at t = 1.5, 2.0 then stopped; eval at t=2.2: 0.8
    trials = [{"steps": {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, "evals": [(2, 1.0, 2.5), (4, 0.5, 4.5)]},
              {"steps": {1: 1.5, 2: 2.0}, "evals": [(2, 0.8, 2.2)]}]
    line = se.timeline(trials, "min")
    assert [e["value"] for e in line] == [0.8, 1.0, 0.5] and [e["best"] for e in line] == [0.8, 0.8, 0.5]
    assert [e["trial_steps"] for e in line] == [4, 4, 6]
    s = se.summarise_sweep(trials, "min", t0=0.0, t_end=5.0, steps=4)
    assert s["best"] == 0.5 and s["trial_steps_total"] == 6 and s["stopped_early"] == 1
    assert s["trial_steps_to_best"] == 6 and s["wall_to_best_s"] == pytest.approx(4.5)
    assert se.reach(line, 0.9, "min") == {"t": 2.2, "trial_steps": 4}
    other = se.timeline([{"steps": {1: 1.0, 2: 2.0}, "evals": [(2, 0.9, 2.1)]}], "min")
    cmp = se.compare({"best": 0.5}, {"best": 0.9}, line, other, "min", {"fifo": 0.0, "asha": 0.0})
    assert cmp["target"] == 0.9 and cmp["fifo"]["trial_steps"] == 4 and cmp["asha"]["trial_steps"] == 2


def test_search_points_are_seeded_and_in_range(se):
    search = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
              "bs": {"type": "categorical", "values": [8, 16]}, "k": {"type": "int", "low": 1, "high": 3}}
    a, b = se.draw_points(search, 20, seed=0), se.draw_points(search, 20, seed=0)
    assert a == b and a != se.draw_points(search, 20, seed=1)
    assert all(1e-4 <= p["lr"] <= 1.0 and p["bs"] in (8, 16) and 1 <= p["k"] <= 3 for p in a)


def test_scaling_summary_and_model(sc):
    def run(total, coll=None):
        return {"steps": [{"forward": total / 4, "backward": total / 2, "step": total / 4, "loss_allreduce": 0.0,
                           "total": total}] * 3, "collectives": coll or {}, "trainable": 1000, "total_params": 10**6,
                "optimizer": "DeepSpeedZeroOptimizer"}

    coll = {"one float": {"numel": 1, "bytes": 4, "samples": [0.001]},
            "all": {"numel": 10**6, "bytes": 4 * 10**6, "samples": [0.011]}}
    m = sc.summarise_model("tiny", {1: [run(0.1)], 2: [run(0.125, coll)]}, batch=8)
    one, two = m["worlds"][1], m["worlds"][2]
    assert one["samples_per_s"] == pytest.approx(80) and two["samples_per_s"] == pytest.approx(128)
    assert two["speedup"] == pytest.approx(1.6) and two["efficiency"] == pytest.approx(0.8)
    alpha, beta = sc.fit_alpha_beta(two["collectives"], 2)
    assert alpha == pytest.approx(0.0005)  # 1 float = 2 (N-1) alpha
    assert sc.ring_allreduce_s(10**6, 2, alpha, beta) == pytest.approx(0.011)  # reproduces the large payload
    assert sc.ring_allreduce_s(123, 1, alpha, beta) == 0.0
    assert sc.predict_step(0.075, 0.025, 1, 2, alpha, beta) == pytest.approx(0.1 + 2 * sc.ring_allreduce_s(1, 2, alpha, beta))
