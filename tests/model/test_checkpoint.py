"""Checkpoints in the release layout: the released index, save/load round trips, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tpo.errors import CheckpointError, ConfigError
from tpo.model.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
from tpo.model.config import load_config
from tpo.model.demo import demo_video
from tpo.model.generate import GenerationResult, run_head
from tpo.model.tokenizer import load_tokenizer
from tpo.model.tpo_model import build_model

RELEASED_TOTAL_SIZE = 16_202_736_564


def test_released_index_matches_every_name_and_the_byte_total(reference_dir):
    report = verify_checkpoint(reference_dir / "model.safetensors.index.json", "videochat-tpo")
    assert report.matched == 2594
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.total_bytes == RELEASED_TOTAL_SIZE
    assert report.expected_bytes == RELEASED_TOTAL_SIZE
    assert report.ok


def test_verify_cli_json(reference_dir):
    out = subprocess.run(
        [sys.executable, "-m", "tpo.model.cli", "verify", str(reference_dir / "model.safetensors.index.json"),
         "--config", "videochat-tpo", "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert {"matched", "missing", "unexpected", "mismatched", "total_bytes"} <= set(report)
    assert report["matched"] == 2594 and report["total_bytes"] == RELEASED_TOTAL_SIZE


def test_videochat_tpo_builds_on_meta_in_under_2_gb():
    code = (
        "import resource, time; t = time.time()\n"
        "from tpo.model.checkpoint import build_skeleton\n"
        "from tpo.model.config import load_config\n"
        "m = build_skeleton(load_config('videochat-tpo'))\n"
        "n = sum(p.numel() for p in m.parameters())\n"
        # VmHWM: this process's own peak. ru_maxrss can carry the forking parent's peak across exec, so a
        # pytest process grown big by earlier tests made this child look 2.3 GB
        "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
        "print(n, hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.time() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    params, max_rss_kb, seconds = out.stdout.split()
    assert int(params) > 8_000_000_000
    assert int(max_rss_kb) < 2 * 1024 * 1024, f"peak RSS {int(max_rss_kb) / 1024:.0f} MiB"
    print(f"videochat-tpo on meta: {float(seconds):.1f} s, peak RSS {int(max_rss_kb) / 1024:.0f} MiB")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config("tiny")
    model = build_model(cfg)
    with torch.no_grad():   # LoRA B starts at zero; make the adapters matter for the round trip
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model, load_tokenizer(cfg.tokenizer)


def all_paths(model, tok) -> dict:
    """Outputs of every path for a fixed clip and fixed router states."""
    torch.manual_seed(1)
    video = demo_video(num_frames=10)
    out = {}
    from tpo.model.preprocess import mllm_pixels
    from tpo.model.prompt import build_prompt

    cfg = model.cfg
    with torch.no_grad():
        pixels = mllm_pixels(video.frames[:8], cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std)
        visual = model.encode_visual(pixels)
        prompt = build_prompt(tok, "track the red circle", cfg.num_visual_tokens)
        logits, hidden, _ = model.llm_step(model.embed_prompt(prompt, visual, {}))
        out["logits"] = logits
        h = hidden[0, -1]
        for task in ("region", "temporal", "track"):
            res = GenerationResult(text="", raw_text="", task=task, token_ids=[])
            clip = video if task != "region" else type(video)(video.frames[:1], video.fps)
            run_head(model, tok, task, h, clip, "when does the red circle appear?", res, None)
            out[task] = res
    return out


# Two model instances with bitwise-equal weights need not give bitwise-equal outputs on every CPU: oneDNN and
# the BLAS pick kernels by memory alignment and CPU features, so a loaded copy may sum in another order (seen:
# a region box 49.87147521 vs 49.87146759 on CI's machine). The round trip is therefore checked as: the weights
# bitwise, the outputs to float32 rounding (OUTPUT_RTOL), masks to a few boundary pixels.
OUTPUT_RTOL = 1e-5
MASK_PIXELS = 4   # low-res logits that differ by rounding may flip pixels whose logit is ~0


def test_tiny_checkpoint_round_trip_keeps_weights_bitwise_and_outputs_to_rounding(tiny, tmp_path):
    model, tok = tiny
    path = save_checkpoint(model, tmp_path / "ckpt", dtype=torch.float32, tokenizer_dir=Path(tok.vocab_file).parent)
    assert verify_checkpoint(path).ok
    loaded, cfg = load_checkpoint(path)
    assert cfg == model.cfg
    want, got = model.release_state_dict(), loaded.release_state_dict()
    assert sorted(want) == sorted(got)
    assert all(want[k].dtype == got[k].dtype and torch.equal(want[k], got[k]) for k in want)
    a, b = all_paths(model, tok), all_paths(loaded, load_tokenizer(path))
    torch.testing.assert_close(b["logits"], a["logits"], rtol=OUTPUT_RTOL, atol=OUTPUT_RTOL)
    np.testing.assert_allclose(b["region"].region[0].box_xyxy, a["region"].region[0].box_xyxy, rtol=OUTPUT_RTOL)
    ta, tb = a["temporal"].temporal[0], b["temporal"].temporal[0]
    # windows at the head's resolution (4 decimals); as sets, since CG-DETR's scores can tie to 1e-4
    np.testing.assert_allclose(sorted(tb.windows_raw), sorted(ta.windows_raw), rtol=0, atol=2e-4)
    np.testing.assert_allclose(tb.saliency, ta.saliency, rtol=1e-3, atol=1e-3)     # fp16-rounded values
    ma, mb = a["track"].track[0].masks, b["track"].track[0].masks
    assert ma.shape == mb.shape and (ma != mb).sum() <= MASK_PIXELS
    np.testing.assert_allclose(b["track"].track[0].scores, a["track"].track[0].scores, rtol=OUTPUT_RTOL,
                               atol=OUTPUT_RTOL)


def test_fp16_checkpoint_stores_fp16_and_keeps_integer_buffers(tiny, tmp_path):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "ckpt16", dtype=torch.float16, max_shard_bytes=4 * 1024 * 1024)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    tensors = {}
    for s in shards:
        tensors.update(load_file(path / s))
    assert tensors["qformer.bert.embeddings.position_ids"].dtype == torch.int64
    assert {t.dtype for k, t in tensors.items() if k != "qformer.bert.embeddings.position_ids"} == {torch.float16}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    loaded, _ = load_checkpoint(path)
    assert loaded.dtype == torch.float16
    ref = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in model.release_state_dict().items()}
    got = loaded.release_state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_bad_checkpoints_fail_with_one_line_naming_the_file_or_tensor(tiny, tmp_path):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "bad", dtype=torch.float16, max_shard_bytes=4 * 1024 * 1024)
    shards = sorted(path.glob("model-*.safetensors"))
    # a missing shard
    moved = shards[1].rename(tmp_path / shards[1].name)
    with pytest.raises(CheckpointError, match=shards[1].name):
        load_checkpoint(path)
    moved.rename(shards[1])
    # a truncated shard
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{shards[0].name}: truncated"):
        load_checkpoint(path)
    shards[0].write_bytes(data)
    # a tensor with the wrong shape
    tensors = load_file(shards[0])
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, shards[0])
    with pytest.raises(CheckpointError, match=rf"tensor {name} has shape"):
        load_checkpoint(path)
    report = verify_checkpoint(path)
    assert [m["name"] for m in report.mismatched] == [name] and not report.ok


def test_unknown_config_and_pickles(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(ConfigError, match="unknown config 'tinyy'.*tiny"):
        load_config("tinyy")
    pt = tmp_path / "model.pt"
    torch.save({k: v.clone() for k, v in model.release_state_dict().items()}, pt)
    with pytest.raises(CheckpointError, match="pickle checkpoints.*--allow-pickle"):
        load_checkpoint(pt, config="tiny")
    loaded, _ = load_checkpoint(pt, config="tiny", allow_pickle=True)
    assert torch.equal(loaded.box_token, model.box_token)


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tpo.model.cli", "verify", str(tmp_path / "nope"), "--config", "tiny"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if "Warning" not in line and "warnings.warn" not in line]
    assert len(lines) == 1 and "no such checkpoint" in lines[0]
