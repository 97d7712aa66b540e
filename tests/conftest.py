"""Shared test fixtures: paths to the reference files and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "videochat-tpo"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "model.safetensors.index.json").is_file():
        pytest.fail(f"reference files missing at {REFERENCE}: the checkout needs ../shared beside it")
    return REFERENCE
