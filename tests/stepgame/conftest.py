"""Fixtures for the StepGame tests: the official validation files beside the repo."""

from pathlib import Path

import pytest

STEPGAME_DIR = Path(__file__).resolve().parents[2] / "../shared/data/stepgame"


@pytest.fixture(scope="session")
def stepgame_dir() -> Path:
    """``../shared/data/stepgame`` (clean/ and noise/ qa{k}_valid.json, statistic.txt)."""
    if not (STEPGAME_DIR / "clean" / "qa1_valid.json").is_file():
        pytest.skip(f"the official StepGame files are not at {STEPGAME_DIR.resolve()}")
    return STEPGAME_DIR


@pytest.fixture(scope="session")
def official(stepgame_dir):
    """All 20 official validation files as one Dataset (clean first, then noise; k = 1..10)."""
    from raypost.stepgame import load_stepgame

    return load_stepgame(stepgame_dir)


@pytest.fixture(scope="session")
def official_rows(official) -> list[dict]:
    """The same as a list of dicts (converting once: reading a Dataset column by column is slow)."""
    return official.to_list()
