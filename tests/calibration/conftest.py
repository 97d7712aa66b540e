"""The calibration tests' shared fixtures: a cache of their own, and one int8 and one int4 artifact."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tpo.calibration import calibrate as C
from tpo.contract import Precision


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """CLI runs cache into a folder of the test session, never the user's ~/.cache."""
    monkeypatch.setenv("TPO_CALIBRATION_CACHE", str(tmp_path_factory.getbasetemp() / "calibration-cache"))


@pytest.fixture(scope="session")
def calibrated(fp32_artifacts, tmp_path_factory):
    """int8 from two synthetic clips (the capture saved), then int4 replaying that capture."""
    root = tmp_path_factory.mktemp("calibrated")
    cache = root / "cache"
    common = dict(artifacts=fp32_artifacts, samples=4, held_out=2, cache_dir=cache, threads=1)
    int8 = C.calibrate(C.CalibrateOptions(out=root / "int8", data="synthetic:2", record_to=root / "captures",
                                          **common), say=lambda _: None)
    int4 = C.calibrate(C.CalibrateOptions(out=root / "int4", captures=root / "captures", precision=Precision.INT4,
                                          **common), say=lambda _: None)
    return SimpleNamespace(root=root, int8=int8, int4=int4, cache=cache)
