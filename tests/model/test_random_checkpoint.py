"""tpo-model random: a random checkpoint in the release layout, written tensor by tensor (small configs here;
videochat-tpo's 16.2 GB run is a measurement in docs/export.md)."""

from __future__ import annotations

import json

import pytest
import torch

from tpo.errors import InputError
from tpo.model import cli
from tpo.model.checkpoint import INDEX_NAME, expected_layout, load_checkpoint, verify_checkpoint
from tpo.model.config import load_config
from tpo.model.random_checkpoint import reference_index, shard_plan, write_random_checkpoint


@pytest.fixture(scope="module")
def small_random(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "small-random"
    write_random_checkpoint("small", out, seed=3)
    return out


def test_layout_verifies_and_loads(small_random):
    files = sorted(p.name for p in small_random.iterdir())
    assert [f for f in files if f.endswith(".safetensors")] == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert {"tokenizer.model", INDEX_NAME, "tpo_config.json"} <= set(files)
    report = verify_checkpoint(small_random, "small")
    assert report.ok, report.to_dict()
    index = json.loads((small_random / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == report.expected_bytes
    model, _ = load_checkpoint(small_random, dtype="fp32")
    norm = model.lm.base_model.model.model.norm.weight.detach()
    assert 0.9 < float(norm.mean()) < 1.1 and float(norm.std()) > 0      # norms near one, not all ones
    qkv = model.vision_encoder.encoder.blocks[0].attn.qkv.weight.detach()
    assert 0.015 < float(qkv.std()) < 0.025 and abs(float(qkv.mean())) < 1e-3
    lora_b = model.lm.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight.detach()
    assert float(lora_b.abs().max()) > 0                                 # a merge changes the weight


def test_seed_decides_every_tensor(small_random, tmp_path):
    again = write_random_checkpoint("small", tmp_path / "again", seed=3)
    other = write_random_checkpoint("small", tmp_path / "other", seed=4)
    for shard in again.shards:
        assert (small_random / shard).read_bytes() == (again.path / shard).read_bytes()
    assert any((small_random / s).read_bytes() != (other.path / s).read_bytes() for s in other.shards)


def test_existing_out_and_small_disk_are_one_line(small_random, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="already exists"):
        write_random_checkpoint("small", small_random)
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(InputError, match=r"small checkpoint needs [0-9.]+ GB free, the disk has 0\.00 GB"):
        write_random_checkpoint("small", tmp_path / "nope")
    assert not (tmp_path / "nope").exists() and not list(tmp_path.glob(".nope*"))


def test_cli_writes_and_refuses(tmp_path, capsys):
    assert cli.main(["random", "--config", "tiny", "--out", str(tmp_path / "t"), "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert verify_checkpoint(tmp_path / "t", "tiny").ok
    assert cli.main(["random", "--config", "tiny", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert cli.main(["random", "--config", "tiny", "--out", str(tmp_path / "u"), "--dtype", "int4"]) == 2


def test_interrupt_leaves_nothing(tmp_path, monkeypatch, capsys):
    from tpo.model import random_checkpoint as rc

    calls = {"n": 0}
    real = rc.tensor_blocks

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(rc, "tensor_blocks", interrupted)
    assert cli.main(["random", "--config", "tiny", "--out", str(tmp_path / "t")]) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_videochat_tpo_plan_is_the_release_index():
    """The full-size plan (meta shapes only): the release's own shard of every tensor, 16,202,736,564 bytes."""
    cfg = load_config("videochat-tpo")
    layout = expected_layout(cfg, torch.bfloat16)
    assert sum(i.nbytes for i in layout.values()) == 16_202_736_564
    plan, how = shard_plan(layout, 4)
    if reference_index().is_file():
        assert how == "release index"
        assert plan == json.loads(reference_index().read_text())["weight_map"]
    assert len(set(plan.values())) == 4
