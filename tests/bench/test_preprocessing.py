"""bench/preprocessing.py: the per-size preprocessing section (parts, tracking frame, shares, goal) and its report
lines, on the runtime's CPU frame path with a fake timer (no artifacts; nothing here asserts a speed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tpo.bench.preprocessing import GOAL_SIZES, PARTS, SIZES, markdown, measure, row, size_name
from tpo.bench.report import write_report
from tpo.bench.stages import Timed
from tpo.contract import Preprocess
from tpo.runtime.frame_path import CpuFramePath

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PRE = Preprocess.from_json({"mllm": {"image_size": 112, "num_frames": 3, **IMAGENET},
                            "mask": {"image_size": 256, **IMAGENET},
                            "temporal": {"features": "internal", "clip_s": 2.0, "frames_per_clip": 1,
                                         "max_text_tokens": 16}}, "test")
# fixed per-call seconds per part, so the section's arithmetic is checked exactly
SECONDS = {"capture": 0.002, "mask_frame": 0.004, "mllm_frame": 0.003, "mllm_clip": 0.009, "track_step": 0.040, "postprocess": 0.002}


def test_row_shares_and_goal():
    p50 = {"capture": 2.0, "mask_frame": 4.0, "mllm_frame": 3.0, "mllm_clip": 9.0, "track_step": 40.0,
           "postprocess": 2.0}
    r = row("1280x720", p50)
    assert r["tracking_frame_ms"] == pytest.approx(48.0)
    assert r["mask_share"] == pytest.approx(4 / 48, abs=1e-4) and r["mllm_share"] == pytest.approx(3 / 48, abs=1e-4)
    assert r["mask_share_decoded"] == pytest.approx(4 / 46, abs=1e-4)
    assert r["met"] is True
    assert row("1920x1080", {**p50, "mllm_frame": 10.0})["met"] is False      # 10 / 48 > 10%
    assert row("1920x1080", {**p50, "mask_frame": 5.0, "capture": 10.0})["met"] is True   # 5 / 57 <= 10%
    assert row("1920x1080", {**p50, "mask_frame": 5.0, "capture": 0.0})["met"] is False   # 5 / 47 > 10%
    assert row("320x240", {**p50, "mask_frame": 30.0})["met"] is None          # not a goal size
    assert set(GOAL_SIZES) == {"1280x720", "1920x1080"} and size_name(*SIZES[0]) == "320x240"


def fake_section():
    rng = np.random.default_rng(0)
    sizes = {size_name(w, h): rng.integers(0, 256, (3, h, w, 3), np.uint8) for w, h in ((32, 24), (97, 61))}
    path = CpuFramePath(PRE, "test")
    outputs: dict[str, dict] = {}

    def timer(stage, fns):
        assert set(fns) == set(PARTS)
        outputs[stage] = {part: fn() for part, fn in fns.items() if part != "track_step"}   # every part runs
        return Timed(stage, {part: [[s, s], [s, s]] for part, s in SECONDS.items()})

    logits = rng.standard_normal((64, 64)).astype(np.float32)
    section = measure(sizes, path, lambda: None, logits, timer, "fake-fp32", PRE)
    return section, outputs


def test_measure_times_every_part_on_the_frame_path():
    section, outputs = fake_section()
    assert [r["size"] for r in section["rows"]] == ["32x24", "97x61"]
    out = outputs["preprocess[97x61]"]
    assert out["capture"].shape == (61, 97, 3) and out["capture"].dtype == np.uint8
    assert out["mask_frame"].shape == (1, 3, 256, 256)
    assert out["mllm_frame"].shape == (1, 3, 1, 112, 112) and out["mllm_clip"].shape == (1, 3, 3, 112, 112)
    mask, _ = out["postprocess"]
    assert mask.shape == (61, 97)
    r = section["rows"][1]
    assert r["mask_frame_ms"] == pytest.approx(4.0) and r["track_step_ms"] == pytest.approx(40.0)
    assert r["capture_ms"] == pytest.approx(2.0)
    assert r["tracking_frame_ms"] == pytest.approx(48.0) and r["met"] is None
    assert section["variant"] == "fake-fp32" and section["frame_path"].startswith("frame path: cpu")
    assert (section["mask_size"], section["mllm_size"], section["clip_frames"]) == (256, 112, 3)
    assert section["parts_ms"]["32x24"]["mllm_clip"]["p50"] == pytest.approx(9.0)


def test_report_json_and_markdown(tmp_path):
    section, _ = fake_section()
    section["rows"].append(row("1920x1080", {"capture": 0.0, "mask_frame": 4.0, "mllm_frame": 6.0, "mllm_clip": 50.0,
                                             "track_step": 40.0, "postprocess": 3.0}))
    lines = markdown(section)
    assert lines[0] == "## Preprocessing at camera sizes (fake-fp32, frame path: cpu (test))"
    assert "| 97x61 | 2.00 | 4.00 | 3.00 | 9.00 | 40.00 | 2.00 | 48.00 | 8.3% (8.7%) | 6.2% (6.5%) | - |" in lines
    assert ("| 1920x1080 | 0.00 | 4.00 | 6.00 | 50.00 | 40.00 | 3.00 | 47.00 | 8.5% (8.5%) | 12.8% (12.8%) | NOT met |"
            in lines)
    assert markdown({}) == []
    written = write_report({"meta": {"machine": {}}, "preprocess_sizes": section}, tmp_path / "out")
    assert json.loads(written["json"].read_text())["preprocess_sizes"]["rows"][2]["met"] is False
    assert "## Preprocessing at camera sizes" in written["md"].read_text()
