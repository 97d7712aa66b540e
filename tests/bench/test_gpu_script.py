"""tests/gpu/run_bench_gpu.py: without a GPU it says so in one line and exits 2 (it never runs the bench)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "gpu" / "run_bench_gpu.py"


def load():
    spec = importlib.util.spec_from_file_location("run_bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_gpu_exits_2(capsys, monkeypatch, tmp_path):
    mod = load()
    monkeypatch.setattr(mod, "gpu_present", lambda: "nvidia-smi not found")
    assert mod.main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no GPU" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: the script would run")
def test_gpu_probe_here_says_why():
    assert load().gpu_present() is not None
