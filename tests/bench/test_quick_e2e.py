"""`tpo-bench --quick` end to end on the embedded tiny model (slow: exports on first use, ~1-2 min after)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

STAGES = {"capture", "preprocess_clip", "preprocess_frame", "vision_encoder", "vision_encoder_image", "connector",
          "llm_prefill", "llm_decode", "task_router", "box_encoder", "temporal_head", "mask_image_encoder",
          "mask_decoder_prompted", "memory_attention", "mask_decoder_tracked", "memory_encoder", "track_step",
          "frame_path", "postprocess", "sink"}


def test_quick_writes_the_three_outputs_with_every_stage(tmp_path):
    from tpo.bench.cli import main

    out = tmp_path / "bench"
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert {e["stage"] for e in data["stages"]} >= STAGES
    for e in data["stages"]:
        assert all(st["count"] > 0 for st in e["variants"].values()), e["stage"]
    assert set(data["first_result"]) == {"track", "region", "temporal", "conversation"}
    for v in data["live"]["variants"].values():
        assert v["accounted"]
    for v in data["stream"]["variants"].values():
        assert v["dropped"] == 0 and v["processed"] == v["frames_in"]
    assert {"tracked objects", "prompt length (prefill)", "frame path resolution"} <= set(data["scaling"])
    pre = data["preprocess_sizes"]
    assert [r["size"] for r in pre["rows"]] == ["320x240", "1280x720", "1920x1080"]
    assert all(r["mask_frame_ms"] > 0 and r["track_step_ms"] > 0 and r["met"] in (True, False, None)
               for r in pre["rows"])
    md = (out / "report.md").read_text()
    assert "## Stages" in md and "## Goal" in md and "## Preprocessing at camera sizes" in md
    assert sorted(p.name for p in out.glob("*.png")) or "matplotlib is not installed" in md
