"""Parent (sweep) and child (trial) MLflow runs, found again by tag on ``--resume``.

Ray's MLflow helpers cannot nest runs and Train V2 refuses Tune's MLflow callback, so
raypost creates runs itself with ``MlflowClient`` and identifies them by tags:
``raypost.sweep`` (the sweep name) on both, ``raypost.role`` = sweep | trial, and
``raypost.trial_id`` on trials. A resumed sweep continues the same runs.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from raypost.errors import TrackingError
from raypost.tracking.metric_keys import run_metrics

SWEEP_TAG, ROLE_TAG, TRIAL_TAG = "raypost.sweep", "raypost.role", "raypost.trial_id"
OUTCOME_TAG = "raypost.outcome"  # what happened to a trial, in words: completed / stopped early at step N / interrupted
PARENT_TAG = "mlflow.parentRunId"


EXPERIMENT_PREFIX = "raypost-"


def experiment_name(method: str) -> str:
    return f"{EXPERIMENT_PREFIX}{method}"


def client_for(uri: str, create: bool = True):
    """An ``MlflowClient`` for ``uri``, after checking that the server answers (fast).
    ``create=False`` (commands that only read: promote, report, eval's --run-id): a SQLite
    store that does not exist is an error, not a new empty database."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri, create=create)
    return MlflowClient(uri)


def check_reachable(uri: str, timeout: float = 5.0, create: bool = True) -> None:
    if not uri.startswith(("http://", "https://")):
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///"):])
            if not create and not db.is_file():
                raise TrackingError(f"no MLflow store at {db} (nothing has been tracked there; "
                                    "pass --tracking-uri or set MLFLOW_TRACKING_URI)")
            db.parent.mkdir(parents=True, exist_ok=True)
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); "
                            "start it or pass --tracking-uri") from None


def version_tags() -> dict[str, str]:
    # from package metadata: importing transformers only for its version cost ~1 s in every trial
    # driver (a fresh process per trial); metadata gives the same strings (e.g. torch 2.13.0+cpu)
    from raypost import __version__

    tags = {"raypost.version": __version__, "ray.version": _package_version("ray"),
            "torch.version": _package_version("torch"), "transformers.version": _package_version("transformers"),
            "python.version": platform.python_version()}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def source_tags(command: str) -> dict[str, str]:
    """The UI's "Created by" and "Source" columns (MLflow's fluent API sets these; a client's
    create_run does not)."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"mlflow.user": user, "mlflow.source.name": command, "mlflow.source.type": "LOCAL"}


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# MLflow 3's UI opens an experiment by its kind; without one it guesses and may land on the GenAI
# traces overview. raypost's experiments hold training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def get_or_create_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp:
        if "mlflow.experimentKind" not in exp.tags:  # made by an older raypost
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return exp.experiment_id
    uri = client.tracking_uri
    # a local SQLite store keeps its artifacts beside the database, not in whatever folder the
    # first run happened to start in, so `raypost ui` finds them from anywhere
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def find_sweep_run(client, sweep: str):
    """The parent run of ``sweep`` in any raypost experiment, or None."""
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'sweep'", max_results=2)
    return runs[0] if runs else None


def start_sweep_run(client, method: str, sweep: str, resume: bool, params: dict) -> str:
    existing = find_sweep_run(client, sweep)
    if existing and not resume:
        raise TrackingError(f"sweep {sweep!r} already exists in MLflow (run {existing.info.run_id}); "
                            "pass --resume to continue it or choose another --name")
    if existing:
        client.update_run(existing.info.run_id, status="RUNNING")
        return existing.info.run_id
    exp_id = get_or_create_experiment(client, experiment_name(method))
    run = client.create_run(exp_id, run_name=sweep, tags={
        SWEEP_TAG: sweep, ROLE_TAG: "sweep", **version_tags(), **source_tags(f"raypost sweep {method}")})
    log_params(client, run.info.run_id, params)
    return run.info.run_id


DEFAULT_OBJECTIVES = {"eval_accuracy": "max"}  # what a sweep run without an objectives param was ranked by


def sweep_objectives(sweep_run) -> dict[str, str]:
    """``{metric: "max" | "min"}`` of a sweep's parent run, in the space's order (the first one
    ranks trials, picks the adapter and is the one with a logged best)."""
    import json

    try:
        return json.loads(sweep_run.data.params.get("objectives") or "{}") or dict(DEFAULT_OBJECTIVES)
    except json.JSONDecodeError:
        return dict(DEFAULT_OBJECTIVES)


def trial_run(client, parent_run_id: str, trial_id: str, trial_name: str, params: dict) -> str:
    """The child run of a trial: created once, found again after a resume or a retry."""
    parent = client.get_run(parent_run_id)
    sweep = parent.data.tags[SWEEP_TAG]
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'")
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if "raypost.interrupted" in runs[0].data.tags:  # resumed: no longer an interrupted trial
            client.delete_tag(run_id, "raypost.interrupted")
        return run_id
    run = client.create_run(parent.info.experiment_id, run_name=trial_name, tags={
        PARENT_TAG: parent_run_id, SWEEP_TAG: sweep, ROLE_TAG: "trial", TRIAL_TAG: trial_id,
        **version_tags(), **source_tags(f"raypost sweep {sweep}")})
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def trial_runs(client, parent_run_id: str) -> list:
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10000)


def log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), 100):  # MLflow's per-call limit on params
        client.log_batch(run_id, params=new[i:i + 100])


def close_dangling_trials(client, parent_run_id: str, interrupted: set[str] | None = None,
                          quiet: bool = False) -> int:
    """Close trial runs left RUNNING. The scheduler kills the trials it stops before they close
    their MLflow run: those become FINISHED too (an early stop is the scheduler doing its job,
    not a failure; the UI would show KILLED in red) with ``raypost.stopped_early=true`` and a
    ``raypost.outcome`` tag saying at which step; in an interrupted sweep they stay KILLED.
    Trials a signal stopped (their Tune trial id in ``interrupted``; every open trial when
    ``interrupted`` is None and ``quiet``, the hard-stop path) become KILLED with
    ``raypost.interrupted=true`` and no early-stop tag: ``--resume`` reruns them. ``quiet``: best
    effort, tracking errors ignored (the process is stopping anyway)."""
    closed = 0
    try:
        for run in trial_runs(client, parent_run_id):
            if run.info.status != "RUNNING":
                continue
            trial = run.data.tags.get(TRIAL_TAG)
            if (interrupted is None and quiet) or (interrupted and trial in interrupted):
                client.set_tag(run.info.run_id, "raypost.interrupted", "true")
                client.set_tag(run.info.run_id, OUTCOME_TAG, "interrupted (--resume reruns it)")
                client.set_terminated(run.info.run_id, status="KILLED")
            else:
                steps, reached = run.data.params.get("steps"), run_metrics(run).get("step")
                complete = steps is not None and reached is not None and reached >= float(steps)
                client.set_tag(run.info.run_id, "raypost.stopped_early", str(not complete).lower())
                client.set_tag(run.info.run_id, OUTCOME_TAG, "completed" if complete else
                               f"stopped early at step {int(reached or 0)} of {steps}")
                # after a signal an incomplete trial may have been cut by it, not by the scheduler:
                # it stays KILLED there, so nothing reads it as a finished trial
                ended = "FINISHED" if complete or interrupted is None else "KILLED"
                client.set_terminated(run.info.run_id, status=ended)
            closed += 1
    except Exception:
        if not quiet:
            raise
    return closed


def close_sweep_run(client, parent_run_id: str, status: str) -> None:
    """The last word on a sweep's parent run; never raises (it runs while an error unwinds)."""
    try:
        client.set_terminated(parent_run_id, status=status)
    except Exception as exc:  # the tracking store is gone: say so, keep the original outcome
        import sys

        print(f"raypost: could not mark sweep run {parent_run_id} {status}: {type(exc).__name__}", file=sys.stderr)
