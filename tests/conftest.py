"""Session-wide fixtures: one local Ray for every test that needs it (starting Ray costs
~10 s, so tests share it), and a throwaway MLflow store per test."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray shared by the session; yields its address for subprocess CLIs."""
    import ray

    from raypost import knobs

    knobs.apply_defaults()
    if not ray.is_initialized():
        # one logical CPU more than two workers need (the trial driver holds 0.01 CPU); the
        # dashboard stays on: without it Ray never frees the CPUs of trials ASHA stopped
        ray.init(num_cpus=3, runtime_env={"env_vars": knobs.worker_env()},
                 log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def mlflow_client(tracking_uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path



@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from more threads; on shared cores extra threads only spin.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
