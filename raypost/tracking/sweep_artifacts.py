"""End of a sweep: close trial runs, summarise, save the best config, log Optuna's plots."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import yaml

from raypost.files import write_text_atomic
from raypost.tracking import runs
from raypost.tracking.metric_keys import mlflow_key, objective_value, run_metrics
from raypost.tracking.views import save_sweep_view


def trial_table(trial_runs: list, metric: str, mode: str) -> list[dict]:
    """One row per trial run read from MLflow (the source of truth), best first."""
    rows = []
    for run in trial_runs:
        rows.append({"trial": run.info.run_name, "run_id": run.info.run_id, "status": run.info.status,
                     metric: objective_value(run, metric), "steps": run_metrics(run).get("step"),
                     "trainable_params": run.data.params.get("trainable_params"),
                     "params": {k: v for k, v in run.data.params.items()}})
    rows.sort(key=lambda r: (r[metric] is None, -(r[metric] or 0) if mode == "max" else (r[metric] or 0)))
    return rows


def format_table(rows: list[dict], metric: str, searched: list[str], top: int = 10) -> str:
    cols = ["trial", "status", metric, "steps", *searched]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for row in rows[:top]:
        values = [row["trial"], row["status"], _fmt(row[metric]), _fmt(row["steps"], integer=True),
                  *[row["params"].get(k, "") for k in searched]]
        lines.append(" | ".join(str(v) for v in values))
    return "\n".join(lines)


def _fmt(value, integer: bool = False) -> str:
    """Floats to 4 decimals; ``integer``: a count (a step is 80, not 80.0000)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if integer else f"{value:.4f}"
    return str(value)


def finish_sweep_run(client, parent_run_id: str, results, space, experiment_dir: Path | None, study=None,
                     interrupted: set[str] | None = None) -> tuple[str, str]:
    """Close dangling trials, log the summary and plots to the parent run. Returns the summary and
    the status the parent run must end with (the caller closes it, whatever happens here).

    ``interrupted``: None for a sweep that ran to its end, else the ids of the trials a signal
    stopped (told apart from the ones the scheduler stopped early)."""
    runs.close_dangling_trials(client, parent_run_id, interrupted=interrupted)
    _tag_stopped_early(client, parent_run_id, results, skip=interrupted or set())
    metric, mode = space.metric, space.mode
    trial_runs = runs.trial_runs(client, parent_run_id)  # after the closing and tagging above
    rows = trial_table(trial_runs, metric, mode)
    table = format_table(rows, metric, list(space.search))
    best = next((r for r in rows if r[metric] is not None), None)
    if best:
        best_config = {k: _parse(v) for k, v in best["params"].items() if k in {**space.fixed, **space.search}}
        client.log_metric(parent_run_id, mlflow_key(f"best_{metric}"), float(best[metric]))
        client.set_tag(parent_run_id, "raypost.best_run_id", best["run_id"])
        client.log_text(parent_run_id, yaml.safe_dump(best_config, sort_keys=True), "best_config.yaml")
        if experiment_dir is not None:
            experiment_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(experiment_dir / "best_config.yaml", yaml.safe_dump(best_config, sort_keys=True))
    client.log_text(parent_run_id, table, "summary.md")
    save_sweep_view(client, parent_run_id, trial_runs)  # again, with the chart sections the trials logged
    if study is not None:
        _log_optuna_plots(client, parent_run_id, study, space)
    errors = sum(1 for r in results if r.error) if results is not None else 0
    if interrupted is not None:
        # KILLED, and resumable: --resume sets the run RUNNING again and redoes only what is missing
        return (f"sweep interrupted with {len(rows)} of {space.samples} trials started "
                f"({len(interrupted)} stopped mid-run); continue it with --resume --name "
                f"{client.get_run(parent_run_id).data.tags.get(runs.SWEEP_TAG)}"), "KILLED"
    head = f"sweep finished: {len(rows)} trials, {errors} errored; best {metric} = " + \
        (_fmt(best[metric]) + f" (run {best['run_id']})" if best else "none")
    where = f"\nbest config: {experiment_dir / 'best_config.yaml'}" if best and experiment_dir else ""
    return f"{head}{where}\n\n{table}", "FINISHED" if best else "FAILED"


def _tag_stopped_early(client, parent_run_id: str, results, skip: set[str]) -> None:
    """Mark trials the scheduler stopped before their last step (from Tune's own results);
    trials in ``skip`` were stopped by a signal, not by the scheduler."""
    by_trial = {r.data.tags.get(runs.TRIAL_TAG): r.info.run_id for r in runs.trial_runs(client, parent_run_id)}
    for result in results or []:
        metrics, config = result.metrics or {}, result.config or {}
        run_id = by_trial.get(metrics.get("trial_id"))
        if run_id and "step" in metrics and "steps" in config and metrics.get("trial_id") not in skip:
            client.set_tag(run_id, "raypost.stopped_early", str(metrics["step"] < config["steps"]).lower())


def _parse(value: str):
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _log_optuna_plots(client, parent_run_id: str, study, space) -> None:
    """Optimisation history, parameter importances, parallel coordinates (Pareto front if 2 objectives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = {"parallel_coordinates": ovm.plot_parallel_coordinate}
    if space.multi_objective:
        plots["pareto_front"] = ovm.plot_pareto_front
    else:
        plots["optimization_history"] = ovm.plot_optimization_history
        if len(complete) >= 2 and len(space.search) >= 2:
            plots["param_importances"] = ovm.plot_param_importances
    import optuna.visualization as ov  # the same plots, interactive (plotly), as HTML beside the PNGs

    # the axis names the metric, not Optuna's "Objective Value"
    target = {"target": lambda t: t.values[0]} if space.multi_objective else {}
    named = {"target_name": space.metric}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, plot in plots.items():
            kwargs = {} if name == "pareto_front" else {**target, **named}
            try:
                plot(study, **kwargs)
                plt.gcf().savefig(Path(tmp) / f"{name}.png", dpi=100, bbox_inches="tight")
                # plotly.js from its CDN: a few kB per plot instead of 3.5 MB each
                getattr(ov, plot.__name__)(study, **kwargs).write_html(Path(tmp) / f"{name}.html",
                                                                       include_plotlyjs="cdn")
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. too few trials for importances
                (Path(tmp) / f"{name}.txt").write_text(f"not plotted: {exc}\n")
            finally:
                plt.close("all")
        (Path(tmp) / "trials.json").write_text(json.dumps(
            [{"number": t.number, "state": t.state.name, "values": t.values, "params": t.params}
             for t in study.trials], indent=1))
        client.log_artifacts(parent_run_id, tmp, artifact_path="optuna")
