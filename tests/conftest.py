"""Shared pytest setup: make `builders` importable and expose the golden-model folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

MODELS = TESTS.parent / "models"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def manifest() -> dict[str, dict]:
    return {entry["file"]: entry for entry in json.loads((MODELS / "manifest.json").read_text())}
