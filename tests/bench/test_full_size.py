"""tpo-bench --full-size on the embedded tiny export (the code path of the release-size measurement, which is
documented in docs/runtime.md, not run here): stages, floors, the depth-extrapolated LLM, the projection."""

from __future__ import annotations

import json

import pytest

from tpo.bench import cli
from tpo.bench.full_size import DEVICES, INT4_BITS, extrapolate, projection, run_full_size


@pytest.fixture(scope="module")
def report(fp32_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("full-size")
    return run_full_size(fp32_artifacts, out, threads=1, iters=1, llm="depth", log=lambda m: None), out


def test_every_stage_is_timed_and_counted(report):
    r, out = report
    for stage in ("vision+connector", "llm prefill", "llm decode", "task_router", "mask_decoder_prompted",
                  "temporal_head", "track step", "track: mask_image_encoder"):
        s = r["stages"][stage]
        assert s["median_s"] > 0 and s["count"]["flops"] > 0 and s["floor"]["floor_s"] > 0, stage
    assert r["stages"]["llm prefill"]["per_token_s"] * r["prompt_tokens"] == pytest.approx(
        r["stages"]["llm prefill"]["median_s"])
    assert "EXTRAPOLATED" in r["llm_label"] and set(r["stages"]["llm decode"]["label"].split()) >= {"EXTRAPOLATED"}
    assert r["load_s"] and r["peak_rss_mb"] > 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["stages"].keys() == r["stages"].keys()
    md = (out / "report.md").read_text()
    assert "| track step |" in md and "Jetson Orin NX 16GB" in md


def test_extrapolation_is_linear_in_layers():
    one = {"median_s": 1.0, "min_s": 0.9, "count": {"flops": 10.0, "bytes": 4.0, "weight_bytes": 3.0, "io_bytes": 1.0}}
    two = {"median_s": 1.5, "min_s": 1.3, "count": {"flops": 16.0, "bytes": 6.0, "weight_bytes": 5.0, "io_bytes": 1.0}}
    e = extrapolate(one, two, 32)
    assert e["median_s"] == pytest.approx(1.0 + 31 * 0.5) and e["count"]["flops"] == pytest.approx(10 + 31 * 6)
    assert e["per_layer_s"] == pytest.approx(0.5)


def test_projection_memory_verdicts():
    gb = 1e9
    stage = {"count": {"flops": 14.5e9, "bytes": 14.5 * gb, "weight_bytes": 14.5 * gb, "io_bytes": 0.0}}
    p = projection({"llm decode": stage}, {"vision": 0.6 * gb, "llm": 14.7 * gb, "sam2": 0.45 * gb, "heads": 0.1 * gb},
                   kv_bytes=0.1 * gb)
    agx, nx, h100 = (p[d.name] for d in DEVICES)
    assert not nx["fits_fp16"] and nx["fits_int4_llm"]          # Orin NX 16 GB: the LLM needs int4
    assert agx["fits_fp16"] and h100["fits_fp16"]
    decode = agx["stages"]["llm decode"]
    assert decode["fp16_ms"] == pytest.approx(14.5 * gb / 204.8e9 * 1e3)                 # bandwidth bound
    assert decode["int4_llm_ms"] == pytest.approx(decode["fp16_ms"] * INT4_BITS / 16)


def test_full_size_arguments_are_one_line(tmp_path, capsys):
    assert cli.main(["--full-size", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--full-size: give one export folder" in err[0]
