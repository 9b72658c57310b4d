"""``raypost report``: the results report (Markdown tables + PNG plots), built from MLflow alone.

For the named sweeps it reads each parent run (``raypost.sweep`` tag, role ``sweep``) and its
trial runs, keeps the *finished* trials (status FINISHED, not stopped early: only they ran the
final StepGame evaluation), and writes ``OUT/report.md`` plus ``OUT/report-*.png``:

(a) accuracy per k of each sweep's best trial (by the sweep's objective, ``best_<metric>``),
    with trainable parameters, training time (trial run end - start) and peak memory;
(b) the Pareto front of accuracy (``stepgame_acc``) against trainable parameters, all trials;
(c) the DePT m/r split curve: accuracy against prompt length m (``dept_m``), r (``dept_r``) marked;
(d) mean and spread over seeds: trials grouped by every hyperparameter except the seeds
    (``seed``, ``data_seed``, ``adapter_init_seed``), within and across sweeps of a method, with
    the output-only losses on training and held-out rows where the recipe reports them (IM);
(e) every finished trial, for reference.

Every number is an MLflow value printed with a fixed format (accuracies 4 decimals), every table
names the sweeps and run ids it came from, and nothing depends on the time of the build or on the
order MLflow returns runs in: building twice from the same store gives the same ``report.md``.
The same files are logged to each sweep's parent run under ``report/``.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from raypost.errors import TrackingError
from raypost.files import write_text_atomic
from raypost.stepgame.labels import LABELS

REPORT_MD = "report.md"
PLOT_PREFIX = "report-"
ARTIFACT_DIR = "report"
ACC = "stepgame_acc"  # final StepGame accuracy on the whole eval set (the trial's last weights)
N_LABELS = len(LABELS)  # StepGame's relations: chance accuracy is 1/9
GROUPS = (("all", "stepgame_acc"), ("noisy", "stepgame_noisy_acc"), ("clean", "stepgame_clean_acc"))
SEED_KEYS = ("seed", "data_seed", "adapter_init_seed")
PLOTS = {"accuracy_per_k": "report-accuracy-per-k.png", "pareto": "report-pareto.png",
         "mr_split": "report-mr-split.png", "seeds": "report-seeds.png"}


# ---- what the report reads from MLflow -----------------------------------------------------------
@dataclass
class Trial:
    sweep: str
    method: str
    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    seconds: float | None  # trial run end - start (includes any pause of a resumed sweep)
    score: float | None = None  # the sweep's objective: best_<metric>, else <metric>

    def num(self, key: str) -> float | None:
        """A param as a number (None when absent or not numeric)."""
        try:
            value = float(self.params[key])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) else None

    @property
    def trainable(self) -> int | None:
        value = self.num("trainable_params")
        return None if value is None else int(value)


@dataclass
class Sweep:
    name: str
    run_id: str
    experiment_id: str
    method: str
    metric: str
    mode: str
    status: str
    fixed: dict[str, str]
    searched: list[str]
    best_tag: str | None
    trials: list[Trial]  # finished trials, sorted by run name then run id
    excluded: dict[str, int] = field(default_factory=dict)  # status -> count of trials left out

    @property
    def objective(self) -> str:
        return f"best_{self.metric}"

    def best(self) -> Trial:
        scored = [t for t in self.trials if t.score is not None]
        sign = -1 if self.mode == "max" else 1
        return min(scored, key=lambda t: (sign * t.score, t.name, t.run_id))


def load_sweep(client, name: str) -> Sweep:
    """The parent run of sweep ``name`` and its finished trials; ``TrackingError`` (exit 3) if the
    sweep is unknown or has no finished trial with its objective metric."""
    from mlflow.exceptions import MlflowException

    from raypost.tracking import runs
    from raypost.tracking.metric_keys import mlflow_key, objective_value, run_metrics

    try:
        parent = runs.find_sweep_run(client, name)
    except MlflowException as exc:  # e.g. a name MLflow's filter syntax cannot hold
        raise TrackingError(f"cannot look up sweep {name!r}: {exc.message.splitlines()[0]}") from None
    if parent is None:
        raise TrackingError(f"no sweep named {name!r} in the MLflow store (sweep names are the --name of "
                            "`raypost sweep`)")
    params = parent.data.params
    experiment = client.get_experiment(parent.info.experiment_id).name
    method = params.get("fixed.method") or experiment.removeprefix("raypost-")
    (metric, mode), *_ = runs.sweep_objectives(parent).items()
    trials, excluded = [], {}
    for run in runs.trial_runs(client, parent.info.run_id):
        status = run.info.status
        stopped = run.data.tags.get("raypost.stopped_early") == "true"
        if status != "FINISHED" or stopped:  # no final evaluation ran (or the trial is not over)
            key = "stopped early" if stopped else status
            excluded[key] = excluded.get(key, 0) + 1
            continue
        end, start = run.info.end_time, run.info.start_time
        trials.append(Trial(
            sweep=name, method=run.data.params.get("method", method), run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id, status=status, params=dict(run.data.params),
            metrics=run_metrics(run), seconds=(end - start) / 1000 if end and start else None,
            score=objective_value(run, metric)))
    if not trials:
        left = ", ".join(f"{n} {s}" for s, n in sorted(excluded.items())) or "no trial runs at all"
        raise TrackingError(f"sweep {name!r} has no finished trial ({left}); nothing to report yet "
                            f"(finish or --resume it first)")
    if all(t.score is None for t in trials):
        raise TrackingError(f"sweep {name!r}: no finished trial logged its objective {metric!r} "
                            f"(nor its best, {mlflow_key('best_' + metric)!r}); nothing to rank")
    trials.sort(key=lambda t: (t.name, t.run_id))
    return Sweep(name=name, run_id=parent.info.run_id, experiment_id=parent.info.experiment_id, method=method,
                 metric=metric, mode=mode, status=parent.info.status,
                 fixed={k[len("fixed."):]: v for k, v in params.items() if k.startswith("fixed.")},
                 searched=sorted(k[len("search."):] for k in params if k.startswith("search.")),
                 best_tag=parent.data.tags.get("raypost.best_run_id"), trials=trials, excluded=excluded)


# ---- formatting ----------------------------------------------------------------------------------
def fmt(value, kind: str = "acc") -> str:
    """One format per kind of number, everywhere: acc 4 decimals, int exact, s/mb 1 decimal."""
    if value is None:
        return "-"
    if kind == "int":
        return str(int(value))
    if kind in ("s", "mb"):
        return f"{value:.1f}"
    return f"{value:.4f}"


# Student's t, two-sided 95%, by degrees of freedom (n - 1): the interval of a mean over few seeds
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_interval(values: list[float]) -> str:
    """``[lo, hi]``: the 95% t-interval of the mean of ``values`` (n >= 2), 4 decimals."""
    n = len(values)
    half = T95.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n)
    mean = statistics.fmean(values)
    return f"[{mean - half:.4f}, {mean + half:.4f}]"


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` (n - 1), both 4 decimals."""
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows])


def parse_md_table(lines: list[str]) -> list[dict[str, str]]:
    """The rows of a Markdown table written by ``md_table`` (header -> cell), for checks and tools."""
    split = lambda line: [c.strip().replace("\\|", "|") for c in line.strip()[1:-1].split(" | ")]  # noqa: E731
    headers = split(lines[0])
    return [dict(zip(headers, split(line))) for line in lines[2:] if line.startswith("|")]


def read_tables(report_md: str) -> dict[str, list[dict[str, str]]]:
    """Every table of a report by the id in the ``<!-- table: ID -->`` comment above it."""
    tables, lines, i = {}, report_md.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("<!-- table: "):
            name = lines[i][len("<!-- table: "):-len(" -->")]
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            tables[name] = parse_md_table(lines[i + 1:j])
            i = j
        else:
            i += 1
    return tables


def _ks(trials: list[Trial], prefix: str) -> list[int]:
    head = f"{prefix}_k"
    return sorted({int(m[len(head):]) for t in trials for m in t.metrics
                   if m.startswith(head) and m[len(head):].isdigit()})


def _param(t: Trial, key: str) -> str:
    return t.params.get(key, "-")


def _sort_value(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# ---- the sections --------------------------------------------------------------------------------
def _sources(sweeps: list[Sweep]) -> str:
    return "Source: " + "; ".join(f"sweep `{s.name}` (parent run `{s.run_id}`)" for s in sweeps) + "."


def section_sweeps(sweeps: list[Sweep]) -> list[str]:
    rows = []
    for s in sweeps:
        left = ", ".join(f"{n} {k}" for k, n in sorted(s.excluded.items())) or "none"
        rows.append([s.name, s.method, s.run_id, s.experiment_id, s.status, f"{s.objective} ({s.mode})",
                     str(len(s.trials)), left, ", ".join(s.searched) or "-"])
    lines = ["## Sweeps", "", "<!-- table: sweeps -->",
             *md_table(["sweep", "method", "parent run", "experiment", "status", "objective", "finished trials",
                        "left out", "searched"], rows),
             "", "Fixed settings of each sweep (parent run params `fixed.*`):", ""]
    for s in sweeps:
        lines.append(f"- `{s.name}`: " + ", ".join(f"`{k}={shown(k, v)}`" for k, v in sorted(s.fixed.items())))
    return lines


def section_accuracy(sweeps: list[Sweep], out: Path) -> list[str]:
    best = [s.best() for s in sweeps]
    lines = ["## (a) Accuracy per k: best trial of each sweep", "",
             "Best finished trial of each sweep by its objective; accuracy = the trial's final StepGame "
             "evaluation on its eval set (MLflow metrics `stepgame_acc`, `stepgame_acc_k<k>`; "
             "`stepgame_noisy_acc_k<k>` / `stepgame_clean_acc_k<k>` for the noisy and clean rows). "
             "Train time = trial run end - start in seconds; peak memory = last `peak_memory_mb`.",
             "Note: the objective is measured on the same eval set, so the best trial's accuracy is an "
             "optimistic estimate; compare sweeps with equal trial counts.",
             f"Chance on StepGame's {N_LABELS} relations is 1/{N_LABELS} = {fmt(1 / N_LABELS)}. "
             "±95% = 1.96·sqrt(acc·(1 - acc) / n) over the n eval rows (param `eval_examples`): the sampling "
             "error of one evaluation, so two accuracies closer than their intervals are not told apart "
             "(a per-k accuracy, on fewer rows, is wider still)."]
    shown = []
    for group, prefix in GROUPS:
        ks = _ks(best, prefix)
        if not ks and prefix not in {m for t in best for m in t.metrics}:
            continue
        if group != "all" and all(_same_as_all(t, prefix) for t in best):
            lines += ["", f"Wherever {group} accuracies were logged here, the {group} rows are the whole eval set "
                          f"(`{prefix}*` = `stepgame_acc*`): no separate table."]
            continue
        rows = []
        whole = group == "all"  # the row count is known for the whole eval set only
        for s, t in zip(sweeps, best):
            spread = [fmt(t.num("eval_examples"), "int"), _interval(t)] if whole else []
            rows.append([s.name, t.method, _param(t, "model"), t.run_id, fmt(t.score), fmt(t.trainable, "int"),
                         fmt(t.seconds, "s"), fmt(t.metrics.get("peak_memory_mb"), "mb"),
                         fmt(t.metrics.get(prefix)), *spread, *[fmt(t.metrics.get(f"{prefix}_k{k}")) for k in ks]])
        lines += ["", f"### {group} eval rows", "", f"<!-- table: accuracy_{group} -->",
                  *md_table(["sweep", "method", "model", "run", "objective", "trainable params", "train time (s)",
                             "peak memory (MB)", "acc", *(["eval rows", "±95%"] if whole else []),
                             *[f"k={k}" for k in ks]], rows)]
        shown.append((group, prefix, ks))
    for s, t in zip(sweeps, best):
        if s.best_tag and s.best_tag != t.run_id:
            lines += ["", f"Sweep `{s.name}` tags `{s.best_tag}` as its best run (over all trials, including "
                          f"ones stopped early); the best *finished* trial shown is `{t.run_id}`."]
    if not shown:
        lines += ["", "No best trial logged a StepGame accuracy (`stepgame_acc*`)."]
    lines += ["", _sources(sweeps)]
    if shown and any(ks for _, _, ks in shown):
        _plot_accuracy(sweeps, best, shown, out / PLOTS["accuracy_per_k"])
        lines += ["", f"![accuracy per k]({PLOTS['accuracy_per_k']})"]
    return lines


def _half_width(t: Trial) -> float | None:
    """Half-width of the normal-approximation 95% interval of ``stepgame_acc`` over the eval rows."""
    n, p = t.num("eval_examples"), t.metrics.get(ACC)
    return None if not n or p is None else 1.96 * math.sqrt(p * (1 - p) / n)


def _interval(t: Trial) -> str:
    return fmt(_half_width(t))


def _same_as_all(t: Trial, prefix: str) -> bool:
    keys = [m for m in t.metrics if m == prefix or m.startswith(prefix + "_k")]
    return all(t.metrics.get(m.replace(prefix, ACC, 1)) == t.metrics[m] for m in keys)


def pareto_front(points: list[tuple[int, float, Trial]]) -> list[tuple[int, float, Trial]]:
    """Points no other point beats on both axes (fewer trainable params, higher accuracy)."""
    front, best_acc = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1], p[2].sweep, p[2].run_id)):
        if p[1] > best_acc:
            front.append(p)
            best_acc = p[1]
    return front


def section_pareto(sweeps: list[Sweep], out: Path) -> list[str]:
    trials = [t for s in sweeps for t in s.trials]
    points = [(t.trainable, t.metrics[ACC], t) for t in trials if t.trainable is not None and ACC in t.metrics]
    lines = ["## (b) Pareto front: accuracy against trainable parameters", "",
             f"All finished trials of all sweeps with `trainable_params` and `{ACC}`: {len(points)} of "
             f"{len(trials)}. A trial is on the front when no other trial has at most as many trainable "
             "parameters and a higher accuracy."]
    if not points:
        return lines + ["", "No trial logged both values."]
    front = pareto_front(points)
    rows = [[fmt(p, "int"), fmt(a), t.sweep, t.method, t.run_id] for p, a, t in front]
    lines += ["", "<!-- table: pareto -->", *md_table(["trainable params", "acc", "sweep", "method", "run"], rows),
              "", _sources(sweeps)]
    _plot_pareto(sweeps, points, front, out / PLOTS["pareto"])
    return lines + ["", f"![pareto front]({PLOTS['pareto']})"]


def section_mr(sweeps: list[Sweep], out: Path) -> list[str]:
    dept = [s for s in sweeps if s.method == "dept"]
    lines = ["## (c) DePT m/r split", "",
             "Every finished trial of the DePT sweeps: accuracy against the prompt length m (`dept_m`), with the "
             "low-rank r (`dept_r`) that the parameter budget leaves; m = 0 is pure low-rank, r = 0 is vanilla "
             "prompt tuning."]
    points = [t for s in dept for t in s.trials
              if t.num("dept_m") is not None and t.num("dept_r") is not None and ACC in t.metrics]
    if not points:
        return lines + ["", "No DePT trial with `dept_m`, `dept_r` and an accuracy among the given sweeps."]
    points.sort(key=lambda t: (t.sweep, t.num("dept_m"), t.num("dept_r"), t.run_id))
    rows = [[t.sweep, t.run_id, fmt(t.num("dept_m"), "int"), fmt(t.num("dept_r"), "int"), _param(t, "dept_s"),
             _param(t, "dept_d"), _param(t, "dept_budget"), fmt(t.trainable, "int"), fmt(t.metrics[ACC])]
            for t in points]
    lines += ["", "<!-- table: mr_split -->",
              *md_table(["sweep", "run", "m", "r", "s", "d", "budget", "trainable params", "acc"], rows),
              "", _sources(dept)]
    _plot_mr(dept, points, out / PLOTS["mr_split"])
    return lines + ["", f"![m/r split]({PLOTS['mr_split']})"]


def hyperparameter_keys(sweeps: list[Sweep]) -> list[str]:
    """The config keys the sweeps set or search (parent params ``fixed.*`` / ``search.*``) plus
    ``world_size``: what makes two trials the same setting. Derived and measured params
    (trainable counts, losses, node ids, timings) are not hyperparameters."""
    keys = {k for s in sweeps for k in (*s.fixed, *s.searched)} | {"world_size"}
    return sorted(keys - set(SEED_KEYS))


def seed_groups(sweeps: list[Sweep]) -> list[tuple[str, dict[str, str], list[Trial]]]:
    """``(method, setting, trials)`` for every setting run with two or more different seeds. The
    setting shows the hyperparameters that differ between the method's trials (the rest are equal)."""
    out = []
    for method in sorted({s.method for s in sweeps}):
        mine = [s for s in sweeps if s.method == method]
        keys = hyperparameter_keys(mine)
        trials = [t for s in mine for t in s.trials if ACC in t.metrics]
        varying = [k for k in keys if len({t.params.get(k, "-") for t in trials}) > 1]
        groups: dict[tuple, list[Trial]] = {}
        for t in trials:
            groups.setdefault(tuple(t.params.get(k, "-") for k in keys), []).append(t)
        for values, members in groups.items():
            seeds = {tuple(t.params.get(k, "-") for k in SEED_KEYS) for t in members}
            if len(seeds) >= 2:
                members.sort(key=lambda t: (tuple(_sort_value(t.params.get(k, "-")) for k in SEED_KEYS),
                                            t.sweep, t.run_id))
                setting = dict(zip(keys, values))
                out.append((method, {k: setting[k] for k in varying}, members))
    out.sort(key=lambda g: (g[0], tuple((k, _sort_value(v)) for k, v in sorted(g[1].items()))))
    return out


LOSS_COLUMNS = (("train_output_loss", "train output loss"), ("eval_output_loss", "held-out output loss"))


def section_seeds(sweeps: list[Sweep], out: Path) -> list[str]:
    lines = ["## (d) Mean and spread over seeds", "",
             f"Finished trials grouped by method and every hyperparameter except the seeds "
             f"({', '.join(f'`{k}`' for k in SEED_KEYS)}), within and across sweeps; groups with at least two "
             "different seeds. Cells: mean ± sample standard deviation (n - 1) of the trials' metrics; the CI is "
             "mean ± t(0.975, n - 1)·std/sqrt(n) (Student's t)."]
    groups = seed_groups(sweeps)
    if not groups:
        return lines + ["", "No setting was run with more than one seed in the given sweeps."]
    ks = _ks([t for _, _, ts in groups for t in ts], ACC)
    # output-only losses on training vs held-out rows, where the recipe reports them (IM): the gap
    # is the overfitting the IM paper argues its instruction loss reduces
    losses = [(m, label) for m, label in LOSS_COLUMNS if any(m in t.metrics for _, _, ts in groups for t in ts)]
    rows = []
    for method, setting, ts in groups:
        seeds = ", ".join("/".join(t.params.get(k, "-") for k in SEED_KEYS) for t in ts)
        cells = []
        for metric in (ACC, *[f"{ACC}_k{k}" for k in ks], *[m for m, _ in losses]):
            values = [t.metrics[metric] for t in ts if metric in t.metrics]
            cells.append(mean_std(values) if len(values) >= 2 else fmt(values[0]) if values else "-")
            if metric == ACC:
                cells.append(mean_interval(values) if len(values) >= 2 else "-")
        rows.append([method, ", ".join(f"{k}={v}" for k, v in sorted(setting.items())) or "-", str(len(ts)),
                     seeds, *cells, ", ".join(sorted({t.sweep for t in ts})), ", ".join(t.run_id for t in ts)])
    lines += ["", "Seeds column: `seed/data_seed/adapter_init_seed` of each trial, in the order of the runs column.",
              "", "<!-- table: seeds -->",
              *md_table(["method", "setting", "n", "seeds", "acc", "acc 95% CI of the mean",
                         *[f"k={k}" for k in ks], *[label for _, label in losses], "sweeps", "runs"], rows),
              "", _sources(sweeps)]
    _plot_seeds(groups, out / PLOTS["seeds"])
    return lines + ["", f"![mean over seeds]({PLOTS['seeds']})"]


def section_trials(sweeps: list[Sweep]) -> list[str]:
    rows = []
    for s in sweeps:
        for t in s.trials:
            rows.append([s.name, t.name, t.run_id, fmt(t.score), fmt(t.metrics.get(ACC)), fmt(t.trainable, "int"),
                         fmt(t.seconds, "s"), ", ".join(f"{k}={t.params.get(k, '-')}" for k in s.searched) or "-"])
    return ["## (e) Every finished trial", "", "Objective = the sweep's `best_<metric>`; acc = `stepgame_acc`.", "",
            "<!-- table: trials -->",
            *md_table(["sweep", "trial", "run", "objective", "acc", "trainable params", "train time (s)",
                       "searched values"], rows)]


# ---- plots (Agg canvas, no pyplot state) ---------------------------------------------------------
def _figure(size=(7, 4.5)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version string: same bytes on rebuild


def _colors(names: list[str]) -> dict[str, str]:
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


def _chance_line(ax) -> None:
    """Chance accuracy, so a flat curve near it reads as "nothing learned", not as a result."""
    ax.axhline(1 / N_LABELS, color="grey", linestyle="--", linewidth=1, label=f"chance (1/{N_LABELS})")


def _plot_accuracy(sweeps, best, shown, path: Path) -> None:
    fig = _figure()
    ax = fig.subplots()
    colors = _colors([s.name for s in sweeps])
    styles = {"all": "-", "noisy": "--", "clean": ":"}
    for s, t in zip(sweeps, best):
        for group, prefix, ks in shown:
            xs = [k for k in ks if f"{prefix}_k{k}" in t.metrics]
            if xs:
                ax.plot(xs, [t.metrics[f"{prefix}_k{k}"] for k in xs], styles[group], marker="o",
                        color=colors[s.name], label=f"{s.name} ({group})" if len(shown) > 1 else s.name)
    ax.set_xticks(sorted({k for _, _, ks in shown for k in ks}))
    ax.set(xlabel="k (chain length)", ylabel="accuracy", ylim=(0, 1.02), title="Best trial of each sweep")
    _chance_line(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_pareto(sweeps, points, front, path: Path) -> None:
    fig = _figure()
    ax = fig.subplots()
    colors = _colors([s.name for s in sweeps])
    for s in sweeps:
        mine = [(p, a) for p, a, t in points if t.sweep == s.name]
        if mine:
            ax.scatter([p for p, _ in mine], [a for _, a in mine], color=colors[s.name], label=s.name, alpha=0.7)
    ax.step([p for p, _, _ in front], [a for _, a, _ in front], where="post", color="black", lw=1)
    ax.scatter([p for p, _, _ in front], [a for _, a, _ in front], s=140, facecolors="none", edgecolors="black",
               label="Pareto front")
    if max(p for p, _, _ in points) > 10 * max(1, min(p for p, _, _ in points)):
        ax.set_xscale("log")
    ax.set(xlabel="trainable parameters", ylabel=f"accuracy ({ACC})", title="Accuracy vs trainable parameters")
    _chance_line(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_mr(dept, points, path: Path) -> None:
    fig = _figure()
    ax = fig.subplots()
    colors = _colors([s.name for s in dept])
    for s in dept:
        mine = [t for t in points if t.sweep == s.name]
        if not mine:
            continue
        ax.errorbar([t.num("dept_m") for t in mine], [t.metrics[ACC] for t in mine],
                    yerr=[_half_width(t) or 0.0 for t in mine], fmt="o", capsize=3, color=colors[s.name],
                    label=s.name, alpha=0.7)
        by_m: dict[float, list[float]] = {}
        for t in mine:
            by_m.setdefault(t.num("dept_m"), []).append(t.metrics[ACC])
        ms = sorted(by_m)
        ax.plot(ms, [statistics.fmean(by_m[m]) for m in ms], color=colors[s.name], lw=1)
        for m in ms:
            r = next(t.num("dept_r") for t in mine if t.num("dept_m") == m)
            ax.annotate(f"r={int(r)}", (m, max(by_m[m])), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=7)
    ax.set(xlabel="prompt length m (dept_m)", ylabel=f"accuracy ({ACC})",
           title="DePT m/r split (line: mean per m; r marked; bars: 95% interval)")
    _chance_line(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _plot_seeds(groups, path: Path) -> None:
    fig = _figure((max(6, 1.2 * len(groups) + 2), 4.5))
    ax = fig.subplots()
    labels = []
    for i, (method, setting, ts) in enumerate(groups):
        values = [t.metrics[ACC] for t in ts]
        ax.errorbar([i], [statistics.fmean(values)], yerr=[statistics.stdev(values)], fmt="o", color="C0", capsize=4)
        ax.scatter([i] * len(values), values, color="C1", s=12, zorder=3)
        labels.append(method + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(setting.items())))
    ax.set_xticks(range(len(groups)), labels, fontsize=7)
    ax.set(ylabel=f"accuracy ({ACC})", title="Mean ± std over seeds (dots: single seeds)")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


# ---- build ---------------------------------------------------------------------------------------
def build_report(client, sweeps: list[str], out_dir) -> Path:
    """Write ``out_dir/report.md`` and its PNGs from the MLflow runs of ``sweeps``; log them to each
    sweep's parent run under ``report/``; return the Markdown file's path."""
    names = list(dict.fromkeys(sweeps))  # keep the given order, drop repeats
    if not names:
        raise TrackingError("no sweep named; give at least one sweep name")
    loaded = [load_sweep(client, n) for n in names]  # every name checked before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{PLOT_PREFIX}*.png"):  # plots of an earlier build that this one may not redo
        old.unlink()
    lines = ["# Results report", "",
             "Generated by `raypost report " + " ".join(names) + "` from MLflow alone; rebuild it with the "
             "same command (same store, same numbers). Do not edit by hand.", "",
             *section_sweeps(loaded), "", *section_accuracy(loaded, out), "", *section_pareto(loaded, out), "",
             *section_mr(loaded, out), "", *section_seeds(loaded, out), "", *section_trials(loaded)]
    md = out / REPORT_MD
    write_text_atomic(md, "\n".join(lines) + "\n")
    files = [md, *sorted(out / name for name in PLOTS.values() if (out / name).exists())]
    for sweep in loaded:
        for f in files:
            client.log_artifact(sweep.run_id, str(f), artifact_path=ARTIFACT_DIR)
    return md


def shown(key: str, value: str) -> str:
    """A setting as the report prints it: data paths (the sweeps log them absolute, for the
    workers) relative to the working directory, so no report names the machine's folders."""
    if key.endswith("_data") and value.startswith("/"):
        return ",".join(os.path.relpath(part, Path.cwd()) for part in value.split(","))
    return value


def cli_report(args) -> int:
    from raypost import knobs
    from raypost.files import writable_dir
    from raypost.tracking.runs import client_for

    writable_dir(args.out, "--out")
    client = client_for(knobs.tracking_uri(args.tracking_uri), create=False)
    path = build_report(client, args.sweeps, args.out)
    print(f"report written to {path} (and logged to the parent run of each sweep under {ARTIFACT_DIR}/)")
    return 0
