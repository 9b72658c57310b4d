"""`raypost report`: tables carry exactly the MLflow numbers, plots are valid PNGs, a rebuild from
the store gives the same report.md, and the report is logged to every sweep's parent run.

The default tests build the MLflow runs directly (the layout `raypost sweep` writes: parent run via
``start_sweep_run`` with ``fixed.*`` / ``search.*`` params, trial runs via ``trial_run``, the
worker's resolved params and the metric names the loop and ``final_evaluate`` log); the slow test
runs a real tiny DePT sweep and reports on it.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from raypost.cli import main
from raypost.report import ACC, PLOTS, REPORT_MD, build_report, read_tables
from raypost.tracking import runs
from raypost.tracking.metric_keys import mlflow_key, run_metrics

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- a synthetic store in raypost's layout -------------------------------------------------------
def _acc(seed: int, salt: int) -> float:
    """An accuracy with many decimals (so rounding in the report is exercised), deterministic."""
    return ((seed * 7919 + salt * 104729) % 9973) / 9973


def _final_metrics(seed: int, ks=(1, 2, 3), groups=("clean",)) -> dict[str, float]:
    """What ``final_evaluate`` logs: stepgame_acc, stepgame_acc_k<k>, per clean/noisy group, shares."""
    out = {}
    for k in ks:
        for g in groups:
            out[f"stepgame_{g}_acc_k{k}"] = _acc(seed, 10 * k + groups.index(g))
    for k in ks:  # all rows of k = the mean over its groups (equal sizes)
        out[f"stepgame_acc_k{k}"] = statistics.fmean(out[f"stepgame_{g}_acc_k{k}"] for g in groups)
    for g in groups:
        out[f"stepgame_{g}_acc"] = statistics.fmean(out[f"stepgame_{g}_acc_k{k}"] for k in ks)
        out[f"stepgame_{g}_acc_hops1"] = _acc(seed, 99)
    out["stepgame_acc"] = statistics.fmean(out[f"stepgame_acc_k{k}"] for k in ks)
    out["stepgame_acc_hops1"] = _acc(seed, 98)
    out["stepgame_mislabelled_share"] = 0.01
    out["stepgame_unmatched_share"] = 0.0
    return out


def _sweep(client, name: str, method: str, fixed: dict, search: dict, trials: list[dict], layout: str = "grouped") -> str:
    """A parent run as ``raypost sweep`` creates it and one trial run per entry of ``trials``
    (``config``: the Tune config; ``params``: what the worker adds; ``metrics``; ``status``)."""
    from mlflow.entities import Metric

    parent = runs.start_sweep_run(client, method, name, resume=False, params={
        **{f"fixed.{k}": v for k, v in {**fixed, "method": method}.items()},
        **{f"search.{k}": json.dumps(v) for k, v in search.items()},
        "samples": len(trials), "scheduler": "fifo", "workers": 1, "gpus_per_worker": 0.0, "placement": "PACK",
        "objectives": json.dumps({"eval_accuracy": "max"})})
    for i, trial in enumerate(trials):
        config = {**fixed, "method": method, **trial["config"]}
        run_id = runs.trial_run(client, parent, f"{name}_{i:05d}", f"run_trial_{name}_{i:05d}", config)
        runs.log_params(client, run_id, {**trial["params"], "world_size": 1, "device": "cpu",
                                         "optimizer": "DeepSpeedCPUAdam"})
        metrics = [Metric("train_loss", 2.0 - s / 10, 0, s) for s in range(1, 5)]
        metrics += [Metric("eval_accuracy", trial["eval"][j], 0, 2 * (j + 1)) for j in range(2)]
        metrics += [Metric("peak_memory_mb", 512.25 + i, 0, 4), Metric("best_eval_accuracy", max(trial["eval"]), 0, 4)]
        if trial["status"] == "FINISHED":
            metrics += [Metric(k, v, 0, 4) for k, v in trial["metrics"].items()]
        if layout == "grouped":  # as raypost logs them; "flat": as raypost did before grouping
            metrics = [Metric(mlflow_key(m.key), m.value, m.timestamp, m.step) for m in metrics]
        client.log_batch(run_id, metrics=metrics)
        if trial.get("stopped"):
            client.set_tag(run_id, "raypost.stopped_early", "true")
        client.set_terminated(run_id, status=trial["status"])
    client.set_terminated(parent, status="FINISHED")
    return parent


def _dept_trial(m: int, seed: int, budget=15360, d=384, s=96, status="FINISHED", groups=("clean",), **config):
    from raypost.recipes import get_recipe

    r = (budget - m * d) // (s + d)
    flat = {"method": "dept", "model": "minilm", "param_budget": budget, "max_input_length": s,
            "prompt_length": m, "seed": seed, **config}
    params = {**get_recipe("dept").resolved(flat), "trainable_params": m * d + r * (s + d) + 3465,
              "dept_m": m, "dept_r": r, "dept_s": s, "dept_d": d, "dept_trainable_params": m * d + r * (s + d),
              "dept_head_params": 3465, "dept_budget": budget, "dept_kind": "classifier", "train_examples": 1000,
              "eval_examples": 150, "train_truncated": 0, "eval_truncated": 0}
    return {"config": {"prompt_length": m, **config}, "params": params, "status": status,
            "stopped": status != "FINISHED",
            "eval": [_acc(seed, m), _acc(seed, m + 1)], "metrics": _final_metrics(seed * 100 + m, groups=groups)}


def _pcp_trial(seed: int, per_label: int, cpt_steps: int):
    params = {"model": "minilm", "steps": 60, "seed": seed, "data_seed": seed, "labelled_per_label": per_label,
              "cpt_steps": cpt_steps, "ft_lr": 3e-5, "template": "{text} Answer: {mask}.", "verbalizer": "stepgame",
              "trainable_params": 22_713_216, "labelled_examples": 9 * per_label, "unlabelled_texts": 1000,
              "eval_examples": 90,
              # measured, differ per trial: must not split the seed groups
              "cpt_loss_first": 9.5 + seed, "cpt_seconds": 12.25 * (seed + 1), "worker_node_ids": f"node{seed}"}
    return {"config": {"seed": seed, "data_seed": seed, "labelled_per_label": per_label}, "params": params,
            "status": "FINISHED", "eval": [_acc(seed, per_label), _acc(seed, per_label + cpt_steps)],
            # output-only losses as IM reports them (any recipe's trials may carry them)
            "metrics": {**_final_metrics(1000 + seed * 10 + per_label, ks=(1, 2)),
                        "train_output_loss": 0.5 + seed / 8, "eval_output_loss": 1.5 + seed / 16}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Sweeps: DePT over m (one trial stopped early), vanilla PT (clean + noisy eval rows), PCP with
    seed x labelled_per_label searched, a second PCP sweep adding seed 3 at 16 per label, and a
    sweep whose only trial was stopped early."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    fixed = {"model": "minilm", "steps": 4, "eval_every": 2, "param_budget": 15360, "max_input_length": 96}
    _sweep(client, "syn-dept", "dept", fixed,
           {"prompt_length": {"type": "int", "low": 0, "high": 40}},
           [_dept_trial(m, 0) for m in (20, 0, 40, 10)] + [_dept_trial(30, 0, status="KILLED")])
    _sweep(client, "syn-pt", "dept", {**fixed, "prompt_length": 40},
           {"lr_prompt": {"type": "categorical", "values": [0.3, 0.4]}},
           [_dept_trial(40, 1, lr_prompt=0.3, groups=("clean", "noisy")),
            _dept_trial(40, 2, lr_prompt=0.4, groups=("clean", "noisy"))])
    pcp_fixed = {"model": "minilm", "steps": 60, "cpt_steps": 20, "ft_lr": 3e-5}
    _sweep(client, "syn-pcp", "pcp", pcp_fixed,
           {"seed": {"type": "categorical", "values": [0, 1, 2]},
            "data_seed": {"type": "categorical", "values": [0, 1, 2]},
            "labelled_per_label": {"type": "categorical", "values": [16, 64]}},
           [_pcp_trial(seed, n, 20) for n in (16, 64) for seed in (0, 1, 2)])
    _sweep(client, "syn-pcp-seed3", "pcp", {**pcp_fixed, "seed": 3, "data_seed": 3, "labelled_per_label": 16}, {},
           [_pcp_trial(3, 16, 20)])
    _sweep(client, "syn-none", "dept", fixed, {}, [_dept_trial(10, 0, status="KILLED")])
    return tmp, uri


SWEEPS = ["syn-dept", "syn-pt", "syn-pcp", "syn-pcp-seed3"]


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _finished(client, sweep: str) -> list:
    parent = runs.find_sweep_run(client, sweep)
    return [r for r in runs.trial_runs(client, parent.info.run_id) if r.info.status == "FINISHED"]


def _check_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def _check_tables_match_mlflow(client, md: str, sweeps: list[str]) -> None:
    """Parse every table back and compare each number with the run it names."""
    tables = read_tables(md)
    run = {}

    def metrics(run_id):
        if run_id not in run:
            run[run_id] = client.get_run(run_id)
        return run_metrics(run[run_id])

    f4 = lambda v: f"{v:.4f}"  # noqa: E731

    # (a) best finished trial of each sweep, accuracy per k
    rows = tables["accuracy_all"]
    assert [r["sweep"] for r in rows] == sweeps
    for row in rows:
        finished = _finished(client, row["sweep"])
        best = max(finished, key=lambda r: run_metrics(r)["best_eval_accuracy"])
        assert row["run"] == best.info.run_id
        m = metrics(row["run"])
        assert row["objective"] == f4(m["best_eval_accuracy"])
        assert row["acc"] == f4(m[ACC])
        n = int(run[row["run"]].data.params["eval_examples"])  # the binomial interval of that accuracy
        assert row["eval rows"] == str(n) and row["±95%"] == f4(1.96 * math.sqrt(m[ACC] * (1 - m[ACC]) / n))
        assert row["trainable params"] == run[row["run"]].data.params["trainable_params"]
        info = run[row["run"]].info
        assert row["train time (s)"] == f"{(info.end_time - info.start_time) / 1000:.1f}"
        assert row["peak memory (MB)"] == f"{m['peak_memory_mb']:.1f}"
        ks = [int(h[2:]) for h in row if h.startswith("k=")]
        assert ks and all(row[f"k={k}"] == (f4(m[f"{ACC}_k{k}"]) if f"{ACC}_k{k}" in m else "-") for k in ks)
    # (b) the Pareto front, recomputed from every finished trial
    points = [(int(r.data.params["trainable_params"]), run_metrics(r)[ACC], r.info.run_id)
              for s in sweeps for r in _finished(client, s)]
    front = tables["pareto"]
    assert front
    for row in front:
        p, a = int(row["trainable params"]), metrics(row["run"])[ACC]
        assert row["acc"] == f4(a) and p == int(run[row["run"]].data.params["trainable_params"])
        assert not any(q <= p and b > a for q, b, _ in points)  # nobody dominates a front point
    best_acc = max(a for _, a, _ in points)
    assert f4(best_acc) in {row["acc"] for row in front}
    # (c) m/r split: every finished DePT trial, m and r as logged
    dept = [r for s in sweeps for r in _finished(client, s) if r.data.params.get("method") == "dept"]
    if dept:
        mr = tables["mr_split"]
        assert sorted(r["run"] for r in mr) == sorted(r.info.run_id for r in dept)
        for row in mr:
            p = run.get(row["run"]) or client.get_run(row["run"])
            assert (row["m"], row["r"]) == (p.data.params["dept_m"], p.data.params["dept_r"])
            assert row["acc"] == f4(run_metrics(p)[ACC])
    # every finished trial is listed with its numbers
    listed = {r["run"]: r for r in tables["trials"]}
    for s in sweeps:
        for r in _finished(client, s):
            assert listed[r.info.run_id]["acc"] == f4(run_metrics(r)[ACC])
            assert listed[r.info.run_id]["objective"] == f4(run_metrics(r)["best_eval_accuracy"])


def test_report_numbers_plots_rebuild_and_artifacts(store, capsys):
    tmp, uri = store
    client = _client(uri)
    out = tmp / "results"
    out.mkdir()
    (out / "README.md").write_text("hand-written claims\n")  # never touched by the report
    assert main(["report", *SWEEPS, "--out", str(out), "--tracking-uri", uri]) == 0
    assert "report written to" in capsys.readouterr().out
    md = (out / REPORT_MD).read_text()
    _check_tables_match_mlflow(client, md, SWEEPS)
    tables = read_tables(md)

    # (a) the stopped-early DePT trial is left out; the PT sweep's noisy rows get their own table
    sweeps = {r["sweep"]: r for r in tables["sweeps"]}
    assert sweeps["syn-dept"]["finished trials"] == "4" and sweeps["syn-dept"]["left out"] == "1 stopped early"
    (pt_noisy,) = [r for r in tables["accuracy_noisy"] if r["sweep"] == "syn-pt"]
    pt = run_metrics(client.get_run(pt_noisy["run"]))
    assert pt_noisy["acc"] == f"{pt['stepgame_noisy_acc']:.4f}"
    assert pt_noisy["k=2"] == f"{pt['stepgame_noisy_acc_k2']:.4f}"
    assert "accuracy_clean" in tables

    # (c) m/r: the DePT sweeps' trials, r derived from the budget
    mr = {(r["sweep"], r["m"]): r["r"] for r in tables["mr_split"]}
    assert mr[("syn-dept", "0")] == "32" and mr[("syn-dept", "40")] == "0" and mr[("syn-dept", "20")] == "16"
    assert ("syn-dept", "30") not in mr  # stopped early

    # (d) seeds: PCP grouped by labelled_per_label across both PCP sweeps; measured params ignored
    seeds = {r["setting"]: r for r in tables["seeds"] if r["method"] == "pcp"}
    assert set(seeds) == {"labelled_per_label=16", "labelled_per_label=64"}
    # DePT: syn-dept's m = 40 trial (lr_prompt at its default 0.3) is syn-pt's first setting with another seed
    (dept,) = [r for r in tables["seeds"] if r["method"] == "dept"]
    assert dept["setting"] == "lr_prompt=0.3, prompt_length=40" and dept["seeds"] == "0/0/0, 1/0/0"
    assert dept["sweeps"] == "syn-dept, syn-pt"
    g16 = seeds["labelled_per_label=16"]
    assert g16["n"] == "4" and g16["sweeps"] == "syn-pcp, syn-pcp-seed3"
    values = [run_metrics(client.get_run(r)) for r in g16["runs"].split(", ")]
    for col, metric in (("acc", ACC), ("k=1", f"{ACC}_k1"), ("k=2", f"{ACC}_k2")):
        xs = [m[metric] for m in values]
        assert g16[col] == f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs):.4f}"
    accs = [m[ACC] for m in values]
    half = 3.182 * statistics.stdev(accs) / 2  # t(0.975, 3 df) * s / sqrt(4)
    assert g16["acc 95% CI of the mean"] == f"[{statistics.fmean(accs) - half:.4f}, {statistics.fmean(accs) + half:.4f}]"
    assert g16["seeds"].split(", ") == ["0/0/-", "1/1/-", "2/2/-", "3/3/-"]
    for col, metric in (("train output loss", "train_output_loss"), ("held-out output loss", "eval_output_loss")):
        xs = [m[metric] for m in values]
        assert g16[col] == f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs):.4f}" != "0.0000 ± 0.0000"
    assert dept["train output loss"] == dept["held-out output loss"] == "-"  # DePT does not report them
    assert seeds["labelled_per_label=64"]["n"] == "3"

    # plots: every section with data drew one, each a valid PNG, referenced from the report
    for name in PLOTS.values():
        _check_png(out / name)
        assert f"]({name})" in md

    # rebuilt from MLflow alone: same bytes
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "README.md"}
    for p in out.iterdir():
        if p.name != "README.md":
            p.unlink()
    build_report(client, SWEEPS, out)
    again = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "README.md"}
    assert again[REPORT_MD] == first[REPORT_MD]
    assert again == first  # the plots too (no timestamps or version strings in the PNGs)
    shutil.rmtree(out)
    build_report(client, SWEEPS, out)
    assert (out / REPORT_MD).read_bytes() == first[REPORT_MD]

    # logged to every sweep's parent run under report/
    for sweep in SWEEPS:
        parent = runs.find_sweep_run(client, sweep).info.run_id
        logged = {a.path for a in client.list_artifacts(parent, "report")}
        assert logged == {f"report/{REPORT_MD}", *(f"report/{n}" for n in PLOTS.values())}
        local = Path(client.download_artifacts(parent, f"report/{REPORT_MD}", str(tmp / f"dl-{sweep}")))
        assert local.read_bytes() == first[REPORT_MD]


def test_report_of_one_sweep_without_seed_groups(store):
    """Sections without data say so instead of drawing an empty plot; a stale plot is removed."""
    tmp, uri = store
    out = tmp / "one"
    out.mkdir()
    (out / PLOTS["seeds"]).write_bytes(b"stale")
    md = build_report(_client(uri), ["syn-dept"], out).read_text()
    assert "No setting was run with more than one seed" in md
    assert not (out / PLOTS["seeds"]).exists()
    _check_tables_match_mlflow(_client(uri), md, ["syn-dept"])
    assert "the clean rows are the whole eval set" in md and "accuracy_clean" not in read_tables(md)


def test_report_reads_stores_written_before_metric_grouping(tmp_path):
    """A store whose trials logged flat metric names (raypost before eval/..., train/...) gives
    the same tables, number for number, as the same trials logged under the grouped keys."""
    fixed = {"model": "minilm", "steps": 4, "eval_every": 2, "param_budget": 15360, "max_input_length": 96}
    search = {"prompt_length": {"type": "int", "low": 0, "high": 40}}
    tables = {}
    for layout in ("flat", "grouped"):
        client = _client(f"sqlite:///{tmp_path / layout}.db")
        _sweep(client, "syn-dept", "dept", fixed, search, [_dept_trial(m, 0) for m in (20, 0, 40)], layout=layout)
        stored = runs.trial_runs(client, runs.find_sweep_run(client, "syn-dept").info.run_id)
        assert any(("/" in k) == (layout == "grouped") for r in stored for k in r.data.metrics)
        md = build_report(client, ["syn-dept"], tmp_path / f"out-{layout}").read_text()
        _check_tables_match_mlflow(client, md, ["syn-dept"])
        # run ids and wall times differ between the two stores; nothing else may
        ids = ("run", "runs", "parent run", "train time (s)")
        tables[layout] = {k: [{c: v for c, v in row.items() if c not in ids} for row in rows]
                          for k, rows in read_tables(md).items()}
    assert tables["flat"] == tables["grouped"] and tables["flat"]["accuracy_all"]


def test_report_errors(store, capsys):
    tmp, uri = store
    out = tmp / "bad"
    capsys.readouterr()
    assert main(["report", "syn-dept", "no-such-sweep", "--out", str(out), "--tracking-uri", uri]) == 3
    err = capsys.readouterr().err
    assert err == "raypost: error: no sweep named 'no-such-sweep' in the MLflow store (sweep names are the " \
                  "--name of `raypost sweep`)\n"
    assert not out.exists()  # every name is checked before anything is written
    assert main(["report", "syn-none", "--out", str(out), "--tracking-uri", uri]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep 'syn-none' has no finished trial (1 stopped early)" in err
    assert main(["report", "syn-dept", "--out", str(out), "--tracking-uri", "http://127.0.0.1:9"]) == 3
    assert "unreachable" in capsys.readouterr().err


# ---- the search spaces of docs/results/README.md -------------------------------------------------
RESULTS_DIR = REPO / "search_spaces" / "results"
RESULT_SPACES = sorted(RESULTS_DIR.rglob("*.yaml"))  # the full-size spaces and the quick/ copies run here
SHARED_NOISE = REPO.parent / "shared" / "data" / "stepgame" / "noise"


@pytest.mark.parametrize("path", RESULT_SPACES, ids=[str(p.relative_to(RESULTS_DIR)) for p in RESULT_SPACES])
def test_result_spaces_are_valid(path, monkeypatch):
    """Each experiment's space loads and passes every check `raypost sweep` runs before Ray starts
    (data paths are relative to the repository, where the README's commands run)."""
    import yaml

    from raypost.tune.space import load_space

    if not SHARED_NOISE.is_dir():
        pytest.skip(f"{SHARED_NOISE} (the official StepGame noise files) is not on this machine")
    method = yaml.safe_load(path.read_text())["method"]
    monkeypatch.chdir(REPO)
    space = load_space(path, method)
    assert space.scheduler == "fifo"  # every trial runs to the end: equal training per trial
    readme = (REPO / "docs" / "results" / "README.md").read_text()
    assert f"--space search_spaces/results/{path.relative_to(RESULTS_DIR)}" in readme
    # a grid (every searched key categorical, every point pinning all of them) runs each point once
    if all(spec["type"] == "categorical" for spec in space.search.values()):
        assert all(set(p) == set(space.search) for p in space.points_to_evaluate)
        assert space.samples == len(space.points_to_evaluate)
        assert len({json.dumps(p, sort_keys=True) for p in space.points_to_evaluate}) == space.samples


def test_readme_commands_name_existing_spaces():
    readme = (REPO / "docs" / "results" / "README.md").read_text()
    named = {line.split("--space ")[1].split()[0] for line in readme.splitlines()
             if "--space search_spaces/results/" in line and "<file>" not in line}
    assert named and named == {f"search_spaces/results/{p.relative_to(RESULTS_DIR)}" for p in RESULT_SPACES}


# ---- a real sweep --------------------------------------------------------------------------------
REAL_SPACE = """\
method: dept
samples: 2
workers: 1
scheduler: fifo
points_to_evaluate: [{prompt_length: 2}, {prompt_length: 6}]
fixed:
  model: tiny:bert
  steps: 4
  eval_every: 2
  batch_size: 8
  param_budget: 1024
  max_input_length: 160
  train_k: "1-2"
  train_per_k: 40
  eval_k: "1-2"
  eval_per_k: 16
search:
  prompt_length: {type: int, low: 0, high: 8}
"""


@pytest.mark.slow
def test_report_from_a_real_sweep(tmp_path, ray_cluster):
    """A tiny DePT sweep through the CLI (2 trials, 1 worker, tiny:bert), then its report."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "dept.yaml"
    space.write_text(REAL_SPACE)
    assert main(["sweep", "dept", "--space", str(space), "--name", "rep", "--address", ray_cluster,
                 "--tracking-uri", uri, "--storage", str(tmp_path / "ray"), "--max-failures", "0"]) == 0
    out = tmp_path / "results"
    assert main(["report", "rep", "--out", str(out), "--tracking-uri", uri]) == 0
    client = _client(uri)
    md = (out / REPORT_MD).read_text()
    _check_tables_match_mlflow(client, md, ["rep"])
    mr = read_tables(md)["mr_split"]
    d, s = 32, 160  # tiny:bert's hidden size, max_input_length
    assert sorted(int(r["m"]) for r in mr) == [2, 6]
    assert all(int(r["r"]) == (1024 - int(r["m"]) * d) // (s + d) for r in mr)
    for name in (PLOTS["accuracy_per_k"], PLOTS["pareto"], PLOTS["mr_split"]):
        _check_png(out / name)
    before = md.encode()
    shutil.rmtree(out)
    assert main(["report", "rep", "--out", str(out), "--tracking-uri", uri]) == 0
    assert (out / REPORT_MD).read_bytes() == before
    parent = runs.find_sweep_run(client, "rep").info.run_id
    assert f"report/{REPORT_MD}" in {a.path for a in client.list_artifacts(parent, "report")}
    assert not math.isnan(run_metrics(client.get_run(mr[0]["run"]))[ACC])


def test_reports_print_data_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    from raypost.report import shown

    monkeypatch.chdir(tmp_path / "..")
    here = tmp_path.resolve().parent
    assert shown("eval_data", f"{here}/shared/clean,{here}/shared/noise") == "shared/clean,shared/noise"
    monkeypatch.chdir(tmp_path)
    assert shown("eval_data", f"{here}/shared/clean") == "../shared/clean"
    assert shown("train_data", "generate") == "generate" and shown("model", "/abs/model") == "/abs/model"
