"""Shared test fixtures: paths to the reference files and small helpers."""

from __future__ import annotations

import os
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


def _export(tmp_path_factory, precision: str) -> Path:
    """Export the embedded tiny checkpoint once per test session (about a minute per precision here).
    A developer iterating on the runtime may point TPO_TEST_ARTIFACTS at a folder holding `fp32/` and `fp16/`
    exports of the current checkpoint to skip this (CI never sets it)."""
    from tpo.export.exporter import ExportOptions, export_artifacts

    given = os.environ.get("TPO_TEST_ARTIFACTS")
    if given:
        return Path(given) / precision

    out = tmp_path_factory.mktemp("artifacts") / precision
    export_artifacts(ExportOptions(out=out, precision=precision, progress=False))
    return out


@pytest.fixture(scope="session")
def fp32_artifacts(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "fp32")


@pytest.fixture(scope="session")
def fp16_artifacts(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "fp16")
