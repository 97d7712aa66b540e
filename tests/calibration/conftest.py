"""The calibration tests' shared fixtures: a cache of their own, and one int8 and one int4 artifact."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
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


def _break_lm_head(dst: Path, kept_fp32: list[str]) -> None:
    """Permute the rows of the quantised LLM's fp32 lm_head (`kept_fp32`: its MatMul) in `dst`: every answer
    changes, the gate must refuse the graph."""
    model = onnx.load(str(dst))
    weight = next(n.input[1] for n in model.graph.node if n.name in kept_fp32)
    for init in model.graph.initializer:
        if init.name == weight:
            w = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(np.random.default_rng(0).permutation(w), init.name))
    onnx.save(model, str(dst))


@pytest.fixture
def break_lm_head():
    """`break_lm_head(dst, kept_fp32)`: a quantised LLM made wrong on purpose (the gate's refusal tests)."""
    return _break_lm_head
