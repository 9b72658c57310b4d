"""``raypost sweep``: Ray Tune + OptunaSearch + ASHA over Ray Train trials.

Ray's Train + Tune pattern for Train V2: each Tune trial is a *function trainable* that
launches a ``TorchTrainer`` (``raypost.train.launch``); ``TuneReportCallback`` forwards the
workers' reports to Tune so ASHA can stop bad trials early.

Order of work: validate the space -> reach MLflow -> start Ray -> run -> summarise. A bad
space or an unreachable tracking server fails before any trial starts.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from raypost import knobs
from raypost.errors import ConfigError, Interrupted
from raypost.train.launch import Scaling, build_trainer
from raypost.tune.space import SearchSpace, default_space_file, load_space, load_yaml, parse_overrides, space_bounds

SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class SweepOptions:
    name: str
    storage: str
    tracking_uri: str
    scaling: Scaling
    samples: int
    scheduler: str
    address: str | None = None
    resume: bool = False
    max_failures: int = 2
    keep_checkpoints: int = 2
    console: str = "progress"  # knobs.CONSOLE_MODES: progress lines, -q, --verbose


@dataclass
class TrialContext:
    """What every trial needs from the sweep driver (small and picklable)."""
    sweep: str
    parent_run_id: str
    tracking_uri: str
    storage: str
    scaling: Scaling
    metric: str
    mode: str
    max_failures: int
    keep_checkpoints: int
    method: str = ""
    searched: tuple[str, ...] = ()


def run_trial(config: dict, ctx: TrialContext) -> None:
    """One Tune trial = one Ray Train job, tracked as a nested MLflow run."""
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypost.tracking.runs import trial_run
    from raypost.tune.progress import trial_label

    tune_ctx = tune.get_context()
    client = MlflowClient(ctx.tracking_uri)
    label = trial_label(ctx.method, config, list(ctx.searched), tune_ctx.get_trial_id())  # the MLflow run name
    run_id = trial_run(client, ctx.parent_run_id, tune_ctx.get_trial_id(), label, config)
    # the space's first objective decides everything inside the trial too: "improved", best_<metric>,
    # the logged adapter (and so promote), as it decides Tune, ASHA and checkpoint ranking
    trainer = build_trainer(
        {**config, "_run_id": run_id, "_tracking_uri": ctx.tracking_uri, "_metric": ctx.metric, "_mode": ctx.mode},
        ctx.scaling,
        name=tune_ctx.get_trial_name(), storage=f"{ctx.storage}/{ctx.sweep}-train",
        metric=ctx.metric, mode=ctx.mode, keep_checkpoints=ctx.keep_checkpoints,
        max_failures=ctx.max_failures, callbacks=[TuneReportCallback()])
    trainer.fit()  # the workers log metrics and the best adapter to the run as they go
    client.set_terminated(run_id, status="FINISHED")


def run_sweep(space: SearchSpace, opts: SweepOptions):
    """Run (or resume) a sweep; returns the Tune ``ResultGrid`` and the summary text. Raises
    ``Interrupted`` (exit 130) after closing everything when a SIGINT/SIGTERM stopped it."""
    from raypost.tracking import runs
    from raypost.tracking.views import save_sweep_view

    # the space as run: --samples/--workers/--scheduler override the file, and the logged
    # search_space.yaml and the "finished or interrupted" verdict must count the same trials
    space = replace(space, samples=opts.samples, workers=opts.scaling.workers,
                    cpus_per_worker=opts.scaling.cpus_per_worker, scheduler=opts.scheduler)
    client = runs.client_for(opts.tracking_uri)  # unreachable server: stop before Ray starts
    parent_run_id = runs.start_sweep_run(client, space.method, opts.name, opts.resume, params={
        **{f"fixed.{k}": v for k, v in space.fixed.items()},
        **{f"search.{k}": json.dumps(v) for k, v in space.search.items()},
        "samples": opts.samples, "scheduler": opts.scheduler, "workers": opts.scaling.workers,
        "cpus_per_worker": opts.scaling.cpus_per_worker, "gpus_per_worker": opts.scaling.gpus_per_worker,
        "placement": opts.scaling.placement_strategy,
        "objectives": json.dumps(space.objectives)})
    # From here on the parent run is always closed: FINISHED, FAILED (no trial scored, or a
    # crash: the exception goes on) or KILLED (interrupted; --resume sets it RUNNING again).
    status = "FAILED"
    try:
        client.log_text(parent_run_id, yaml.safe_dump(space.as_dict(), sort_keys=False), "search_space.yaml")
        save_sweep_view(client, parent_run_id)  # the runs table `raypost ui` links this sweep to
        _start_ray(opts)  # first: ray.init installs its own SIGTERM handler, which must not replace ours
        with StopSignals() as stop:
            results = _fit(space, opts, parent_run_id)
        from raypost.tracking.sweep_artifacts import finish_sweep_run

        study = None
        if space.search:
            import optuna

            study = optuna.load_study(study_name=opts.name,
                                      storage=knobs.optuna_storage(f"{opts.storage}/{opts.name}"))
        experiment = Path(opts.storage) / opts.name if "://" not in opts.storage else None
        interrupted = _unfinished_trials(results) if stop.received else None
        summary, status = finish_sweep_run(client, parent_run_id, results, space, experiment, study,
                                           interrupted=interrupted)
    except KeyboardInterrupt:  # a second signal: stop now, close what is open
        status = "KILLED"
        runs.close_dangling_trials(client, parent_run_id, interrupted=None, quiet=True)
        raise
    finally:
        runs.close_sweep_run(client, parent_run_id, status)
    if stop.received:
        raise Interrupted(f"{stop.received}: {summary}")
    return results, summary


def _start_ray(opts: SweepOptions) -> None:
    import logging

    import ray

    knobs.apply_defaults()
    if not ray.is_initialized():
        verbose = opts.console == "verbose"
        if not verbose:  # a notice printed at every start of a local Ray; `ray start` shows it too
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # Ray's own switches: its driver log lines, its Python loggers in every worker and actor
        # (the Train controller's "Requesting resources ..."), and with -q no worker output at all
        ray.init(address=opts.address, runtime_env={"env_vars": knobs.worker_env()},
                 logging_level=logging.INFO if verbose else logging.ERROR,
                 logging_config=None if verbose else ray.LoggingConfig(log_level="WARNING"),
                 log_to_driver=opts.console != "quiet", **_local_resources(opts))
    check_gpus(opts.scaling, ray.cluster_resources().get("GPU", 0.0), _autoscaler_gpus())


def check_gpus(scaling: Scaling, have: float, autoscaled: float) -> None:
    """A trial that asks for more GPUs than the cluster has, or can get from its autoscaler,
    would wait for them forever: refuse it in one line before any trial starts."""
    need = scaling.workers * scaling.gpus_per_worker
    if need and have + autoscaled < need:
        raise ConfigError(f"--gpus-per-worker={scaling.gpus_per_worker:g} needs {need:g} GPUs per trial "
                          f"({scaling.workers} workers), but the Ray cluster has {have:g} and its autoscaler can "
                          f"add {autoscaled:g}; use --gpus-per-worker 0 to train on CPUs, or a cluster with GPUs")


def _autoscaler_gpus() -> float:
    """GPUs ``ray up``'s autoscaler may still start: on the head node, its node types' GPUs
    times their ``max_workers`` (the bootstrap config it was started with); 0 elsewhere."""
    path = Path.home() / "ray_bootstrap_config.yaml"
    if not path.is_file():
        return 0.0
    try:
        types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types") or {}
    except (OSError, yaml.YAMLError):
        return float("inf")  # unreadable: assume the autoscaler may provide, rather than refuse wrongly
    return sum(float((t.get("resources") or {}).get("GPU", 0)) * int(t.get("max_workers", 0) or 0)
               for t in types.values() if isinstance(t, dict))


def _fit(space: SearchSpace, opts: SweepOptions, parent_run_id: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    ctx = TrialContext(opts.name, parent_run_id, opts.tracking_uri, opts.storage, opts.scaling,
                       space.metric, space.mode, opts.max_failures, opts.keep_checkpoints,
                       method=space.method.rsplit(".", 1)[-1], searched=tuple(space.search))
    callbacks = []
    if opts.console == "progress":
        from raypost.tune.progress import ConsoleProgress

        callbacks.append(ConsoleProgress(opts.tracking_uri, parent_run_id, ctx.method,
                                         list(space.search), opts.samples, space.metric, space.mode))
    if opts.console != "verbose":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune's new console engine prints its experiment box and results path even when silent;
    # the classic one at verbose=0 prints nothing but errors (raypost's own lines take over)
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if opts.console == "verbose" else "0"
    # the trial driver only waits on its TorchTrainer; Tune rejects 0 CPUs, so give it a sliver
    trainable = tune.with_resources(functools.partial(run_trial, ctx=ctx), {"cpu": 0.01})

    if opts.resume and tune.Tuner.can_restore(f"{opts.storage}/{opts.name}"):
        tuner = tune.Tuner.restore(f"{opts.storage}/{opts.name}", trainable,
                                   resume_unfinished=True, resume_errored=True, param_space=space.fixed)
    else:
        if opts.resume:
            print(f"raypost: no Tune state for {opts.name!r} yet; starting it", file=sys.stderr)
        tuner = tune.Tuner(
            trainable, param_space=dict(space.fixed),
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(_searcher(space, opts, OptunaSearch),
                                              max_concurrent=_max_concurrent(opts.scaling)) if space.search else None,
                scheduler=_scheduler(space, opts.scheduler, ASHAScheduler, FIFOScheduler),
                num_samples=opts.samples, reuse_actors=False,
                **({} if space.multi_objective else {"metric": space.metric, "mode": space.mode})),
            run_config=tune.RunConfig(name=opts.name, storage_path=opts.storage,
                                      verbose=1 if opts.console == "verbose" else 0, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=min(1, opts.max_failures))),
        )
    return tuner.fit()


class StopSignals:
    """SIGINT and SIGTERM while the sweep runs. The first one asks Tune to stop the way Tune
    stops itself (SIGUSR1: running trials are stopped and the experiment state is saved, so
    ``--resume`` continues); ``received`` then names the signal. A second one, or one that
    arrives before Tune listens, stops at once (KeyboardInterrupt). Tune's own SIGINT handler
    is switched off for the duration: it would swallow the interrupt and let the sweep look
    finished."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: str | None = None
        self._old: dict = {}
        self._env: str | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        return self

    def _handle(self, signum, frame) -> None:
        tune_listens = callable(signal.getsignal(signal.SIGUSR1))
        if self.received is not None or not tune_listens:
            self.received = self.received or signal.Signals(signum).name
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"raypost: {self.received}: stopping the sweep after saving its state "
              "(send it again to stop at once)", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env


def _unfinished_trials(results) -> set[str]:
    """Trial ids Tune had not finished when it stopped (neither terminated nor errored)."""
    analysis = getattr(results, "_experiment_analysis", None)
    if analysis is None:
        return set()
    return {t.trial_id for t in analysis.trials if t.status not in ("TERMINATED", "ERROR")}


def _searcher(space: SearchSpace, opts: SweepOptions, OptunaSearch):
    # The study is persistent (journal file beside the Tune state, or a database on a
    # cluster), so `--resume` continues the same study instead of sampling from scratch.
    storage = knobs.optuna_storage(f"{opts.storage}/{opts.name}")
    objectives = list(space.objectives)
    return OptunaSearch(space=space.optuna_space(), study_name=opts.name, storage=storage, seed=space.seed,
                        points_to_evaluate=space.points_to_evaluate or None,
                        metric=objectives if space.multi_objective else objectives[0],
                        mode=[space.objectives[m] for m in objectives] if space.multi_objective else space.mode)


def _scheduler(space: SearchSpace, name: str, ASHAScheduler, FIFOScheduler):
    if name == "fifo" or space.multi_objective:  # ASHA ranks on one metric only
        return FIFOScheduler()
    steps = int(max(space_bounds(space.search, "steps", space.fixed, 100)))
    every = int(min(space_bounds(space.search, "eval_every", space.fixed, 25)))
    reports = max(1, -(-steps // every))
    # max_t one past the last report: a trial that reaches it is left to finish on its own
    # (final evaluation, run closed) instead of being stopped by the scheduler at its last report
    return ASHAScheduler(time_attr="training_iteration", max_t=reports + 1,
                         grace_period=max(1, reports // 4), reduction_factor=2)


def _local_resources(opts: SweepOptions) -> dict:
    """A local Ray gets one logical CPU more than the machine has: trial drivers hold 0.01 CPU
    each while they only wait on their workers, and without the extra slot a 2-core machine
    could never place a 2-worker trial next to its driver."""
    if opts.address:
        return {}
    import os

    return {"num_cpus": max(os.cpu_count() or 1, int(opts.scaling.workers * opts.scaling.cpus_per_worker)) + 1}


def _max_concurrent(scaling: Scaling) -> int:
    """As many trials as the cluster can hold at once (at least one)."""
    import ray

    res = ray.cluster_resources()
    fits = [res.get("CPU", 1) // (scaling.workers * scaling.cpus_per_worker)]
    if scaling.gpus_per_worker:
        fits.append(res.get("GPU", 0) // (scaling.workers * scaling.gpus_per_worker))
    return max(1, int(min(fits)))


def check_flags(args) -> None:
    """The numeric command-line flags, before any file is read: a flag that is given is used,
    never silently replaced by the space's value."""
    for flag, low in (("samples", 1), ("workers", 1), ("cpus_per_worker", 0.01), ("gpus_per_worker", 0),
                      ("max_failures", 0)):
        value = getattr(args, flag, None)
        if value is not None and value < low:
            raise ConfigError(f"--{flag.replace('_', '-')}={value:g} must be at least {low:g}")
    name = getattr(args, "name", None)
    if name is not None and not SWEEP_NAME.fullmatch(name):
        # the name becomes an MLflow filter value and tag key, a UI link key and a storage folder
        raise ConfigError(f"--name {name!r}: a sweep name is 1-100 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A ``--address HOST:PORT`` (or ``ray://HOST:PORT``) that nothing answers is one line
    before the parent run exists: ``ray.init`` itself would retry it for minutes."""
    if not address or address in ("auto", "local"):
        return
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} must be 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({type(exc).__name__}); "
                          "start one (`ray start --head`, `ray up`) or leave --address out for a local Ray") from None


def options_from_args(args, space: SearchSpace) -> SweepOptions:
    check_flags(args)
    check_address(args.address)
    if args.resume and not args.name:
        raise ConfigError("--resume needs --name of the sweep to resume")
    samples = args.samples if args.samples is not None else space.samples
    workers = args.workers if args.workers is not None else space.workers
    cpus = args.cpus_per_worker if args.cpus_per_worker is not None else space.cpus_per_worker
    return SweepOptions(
        name=args.name or f"{space.method}-{dt.datetime.now():%Y%m%d-%H%M%S}",
        storage=knobs.storage_path(args.storage), tracking_uri=knobs.tracking_uri(args.tracking_uri),
        scaling=Scaling(workers=workers, cpus_per_worker=cpus,
                        gpus_per_worker=args.gpus_per_worker,
                        placement_strategy=getattr(args, "placement", None) or "PACK"),
        samples=samples, scheduler=args.scheduler or space.scheduler, address=args.address, resume=args.resume,
        max_failures=getattr(args, "max_failures", 2), console=knobs.console())


def cli_sweep(args) -> int:
    from raypost.recipes import get_recipe

    get_recipe(args.method)  # an unknown method is named before any file is looked for
    check_flags(args)
    space = load_space(args.space or default_space_file(args.method), args.method, parse_overrides(args.set))
    opts = options_from_args(args, space)
    _, summary = run_sweep(space, opts)
    print(summary)
    return 0


def cli_train(args) -> int:
    """``raypost train``: a one-trial sweep with no search, so it is tracked the same way."""
    from raypost.configs import help_table
    from raypost.recipes import get_recipe

    recipe = get_recipe(args.method)
    if args.help_config:
        for cls in recipe.config_classes:
            print(f"# {cls.__name__}")
            for name, default, text in help_table(cls):
                print(f"{name:22} {default!r:28} {text}")
        return 0
    check_flags(args)
    fixed = _load_flat(args.config) if args.config else {}
    raw = {"method": args.method, "samples": 1, "workers": args.workers, "scheduler": "fifo",
           "cpus_per_worker": args.cpus_per_worker, "fixed": fixed}
    if getattr(args, "objective", None):
        raw["objectives"] = parse_objective(args.objective)
    from raypost.tune.space import validate_space

    space = validate_space(raw, args.method, source=args.config or "<defaults>", overrides=parse_overrides(args.set))
    args.samples, args.resume, args.scheduler, args.space = 1, False, "fifo", None
    opts = options_from_args(args, space)
    _, summary = run_sweep(space, opts)
    print(summary)
    return 0


def parse_objective(text: str) -> dict:
    """``--objective eval_loss:min`` -> ``{"eval_loss": "min"}``."""
    metric, _, mode = text.partition(":")
    if not metric or mode not in ("max", "min"):
        raise ConfigError(f"--objective={text!r} must look like METRIC:max or METRIC:min")
    return {metric: mode}


def _load_flat(path: str) -> dict:
    """A run config: a flat YAML mapping of config keys (``raypost train --help-config``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        data = load_yaml(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a UTF-8 YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys to values")
    return data
