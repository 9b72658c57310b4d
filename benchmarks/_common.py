"""Helpers shared by the platform benchmarks (platform_overhead, search_efficiency, scaling).

Pure functions only (no Ray, no torch at import), so the tests can load them in milliseconds:
README block replacement, machine description, statistics, number formatting, and the timeline
of a raypost trial read back from MLflow metric timestamps and Ray Train's structured logs.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "results"


# ---- README blocks -----------------------------------------------------------------------------
def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def update_readme(path: Path, name: str, block: str) -> None:
    """Replace the text between ``name``'s markers (append the block if they are missing)."""
    begin, end = markers(name)
    text = path.read_text() if path.exists() else ""
    new = f"{begin}\n{block}{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + new + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def command_line(script: str, argv: list[str]) -> str:
    return f"python benchmarks/{script}" + "".join(f" {shlex.quote(a)}" for a in argv)


# ---- arguments and outputs shared by every script ----------------------------------------------
def add_output_args(p) -> None:
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where NAME.json (every sample) and NAME.md go")
    p.add_argument("--readme", type=Path, default=README, help="README whose marked block is rewritten")
    p.add_argument("--no-readme", action="store_true", help="do not touch any README")


def write_outputs(args, name: str, report: dict, markdown: str) -> dict:
    """``NAME.json`` (every sample) and ``NAME.md`` into ``--out-dir``, the README block, stdout."""
    import json

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out_dir / f"{name}.md").write_text(markdown)
    if not args.no_readme:
        update_readme(args.readme, name, markdown)
    print(markdown)
    return report


# ---- machine ---------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_model": cpu, "python": platform.python_version()}
    for module in ("torch", "deepspeed", "ray", "mlflow", "transformers"):
        try:
            from importlib.metadata import version

            info[module] = version(module)
        except Exception:  # pragma: no cover - a missing package is just not reported
            pass
    return info


def loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


class LoadSampler:
    """1-minute load averages sampled whenever ``sample()`` is called (between measurements)."""

    def __init__(self):
        self.samples: list[float] = []

    def sample(self) -> None:
        load = loadavg()
        if load:
            self.samples.append(load[0])

    def summary(self) -> dict:
        s = self.samples
        return {"n": len(s), "min": min(s), "median": statistics.median(s), "max": max(s)} if s else {}


def load_text(summary: dict, nproc: int) -> str:
    if not summary:
        return "load average not available"
    return (f"1-minute load average {summary['min']:.1f}–{summary['max']:.1f} (median {summary['median']:.1f}) "
            f"over {summary['n']} samples on {nproc} cores, shared with other users")


# ---- statistics --------------------------------------------------------------------------------
def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def quartiles(xs) -> list[float] | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    if len(xs) < 2:
        return [xs[0]] * 3
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return [q1, q2, q3]


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fmt(x, digits: int = 3, unit: str = "") -> str:
    if x is None:
        return "–"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}{unit}"
    return f"{x:.{digits}g}{unit}"


def fmt_ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}"


# ---- step timelines ------------------------------------------------------------------------------
def is_eval_step(step: int, eval_every: int, last: int) -> bool:
    """The loop evaluates (and reports, checkpoints, logs to MLflow) at these steps."""
    return step % eval_every == 0 or step == last


def split_intervals(step_end: dict[int, float], eval_every: int, last: int) -> dict:
    """Intervals between the ends of consecutive steps, split by what ran in between.

    ``step_end`` maps step -> time (s) at which that step's loss was recorded. The interval
    k-1 -> k holds one training step, plus everything the loop did after step k-1 when k-1 was an
    evaluation step (evaluate, checkpoint, MLflow, report). So "plain" intervals are the per-step
    cost, and "after_eval" intervals minus the median plain interval are the per-evaluation cost.
    """
    steps = sorted(step_end)
    plain, after_eval = [], []
    for prev, cur in zip(steps, steps[1:]):
        if cur != prev + 1:
            continue  # a gap in the history (e.g. a resumed trial): not one step
        gap = step_end[cur] - step_end[prev]
        (after_eval if is_eval_step(prev, eval_every, last) else plain).append(gap)
    step = median(plain)
    return {"plain": plain, "after_eval": after_eval, "step_s": step,
            "step_quartiles": quartiles(plain),
            "eval_extra_s": median([g - step for g in after_eval]) if step is not None and after_eval else None}


def mlflow_step_times(history) -> dict[int, float]:
    """step -> seconds from an MLflow metric history (Metric objects with .step, .timestamp in ms)."""
    return {m.step: m.timestamp / 1000.0 for m in history}


# ---- Ray Train's structured logs -------------------------------------------------------------------
TRAIN_EVENTS = {
    # message prefix in logs/train/ray-train-sys-*.log -> event name
    "Requesting resources": "requesting_resources",
    "Attempting to start training worker group": "starting_worker_group",
    "Started training worker group": "worker_group_started",
    "Rank 0: Launching training function": "train_fn_launched",
    "Shutting down": "worker_group_shutdown",
}
TRAIN_DURATIONS = {
    # "[Worker Group Initialization] 2 worker actors created in 5.22s." -> worker_actors_created_s
    "worker actors created in": "worker_actors_created_s",
    "Train context initialized on workers in": "train_context_s",
    "Worker group startup completed in": "worker_group_startup_s",
}


def parse_train_logs(lines, run_name: str) -> dict:
    """First timestamp of each Ray Train event and the durations Ray itself reports, for one run."""
    out: dict = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, TypeError):
            continue
        if rec.get("run_name") != run_name:
            continue
        msg, ts = rec.get("message", ""), rec.get("timestamp_ns")
        if ts is None:
            continue
        for prefix, name in TRAIN_EVENTS.items():
            if msg.startswith(prefix) and name not in out:
                out[name] = ts / 1e9
        for phrase, name in TRAIN_DURATIONS.items():
            if phrase in msg and name not in out:
                try:
                    out[name] = float(msg.split(phrase, 1)[1].strip().split("s")[0])
                except ValueError:
                    pass
    return out


def read_train_logs(session_dir: str | None) -> list[str]:
    if not session_dir:
        return []
    lines = []
    for path in sorted((Path(session_dir) / "logs" / "train").glob("ray-train-sys-*.log")):
        try:
            lines += path.read_text(errors="replace").splitlines()
        except OSError:
            pass
    return lines


def trial_phases(t_call: float | None, sweep_start: float | None, trial_start: float, ray_events: dict,
                 first_step_end: float, step_s: float, last_step_end: float, trial_end: float,
                 t_return: float | None) -> dict:
    """Where a raypost trial's wall clock goes, as consecutive phases (seconds).

    Times are absolute (epoch s): ``t_call`` run_sweep() called; ``sweep_start`` the sweep's MLflow
    run created; ``trial_start`` the trial's MLflow run created (by the trial driver, inside a
    Tune actor); Ray Train events from its logs; the first/last step's ``train_loss`` timestamps;
    ``trial_end`` the trial run closed (after ``fit()``); ``t_return`` run_sweep() returned.
    """
    first_step_start = first_step_end - step_s
    points = [("sweep set-up (validate, MLflow sweep run)", t_call, sweep_start),
              ("Tune: trial actor start, trial run", sweep_start, trial_start)]
    req, started, launched = (ray_events.get(k) for k in
                              ("requesting_resources", "worker_group_started", "train_fn_launched"))
    if req and started:
        in_worker = launched or started
        points += [("trial driver → Train controller up", trial_start, req),
                   ("worker group start (worker processes, process group)", req, in_worker),
                   ("in worker: imports, recipe.setup, DeepSpeed init, MLflow params", in_worker, first_step_start)]
    else:
        points += [("trial run → first step (Ray Train start-up, setup, DeepSpeed)", trial_start, first_step_start)]
    phases = {name: (b - a) if a is not None and b is not None else None for name, a, b in points}
    phases["start-up total"] = first_step_start - (t_call if t_call is not None else trial_start)
    phases["last step → trial run closed (last report, final eval, shutdown)"] = trial_end - last_step_end
    if t_return is not None:
        phases["trial run closed → run_sweep returned (summary)"] = t_return - trial_end
    return phases


# ---- processes and a Ray of our own ----------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayContext:
    """A local Ray started for one benchmark (never another user's: ``address="local"``), with
    raypost's worker environment, one logical CPU more than the machine has (as raypost's own
    ``_local_resources``), an SQLite MLflow store and Ray storage in ``work``."""

    def __init__(self, args, work: Path, log):
        import time

        import ray

        from raypost import knobs

        knobs.apply_defaults()
        num_cpus = getattr(args, "num_cpus", None) or (os.cpu_count() or 1) + 1
        gpus = getattr(args, "gpus_per_worker", 0.0)
        t = time.perf_counter()
        ray.init(address="local", num_cpus=num_cpus, num_gpus=None if gpus else 0,
                 runtime_env={"env_vars": knobs.worker_env()}, log_to_driver=False)
        self.init_s = time.perf_counter() - t
        self.num_cpus = num_cpus
        try:  # private API; without it the trial start-up is split more coarsely
            self.session_dir = ray._private.worker._global_node.get_session_dir_path()
        except Exception:
            self.session_dir = None
        self.uri = f"sqlite:///{work / 'mlflow.db'}"
        self.storage = str(work / "ray")
        log(f"Ray started in {self.init_s:.1f} s ({num_cpus} logical CPUs), session {self.session_dir}")

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
