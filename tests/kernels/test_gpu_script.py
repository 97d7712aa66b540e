"""tests/gpu/run_gpu_checks.py works before a GPU is lent: its dry run on the CPU emulation passes every
check, and without a GPU it says so on one line and exits 2 (device time is too scarce to debug it there)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tpo.kernels import available

SCRIPT = Path(__file__).resolve().parents[1] / "gpu" / "run_gpu_checks.py"


def test_dry_run_on_the_emulation():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--emulate"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["section", "check"] for line in lines)
    for check in (
        "preprocess bgr",
        "preprocess rgb",
        "preprocess bgra",
        "preprocess nv12",
        "mask 256x256",
        "span decode",
        "frame 320x240 mask_frame",
        "frame 320x240 mllm_frames",
        "frame 320x240 frame_inputs",
        "frame 320x240 mask_and_box",
    ):
        assert sum(check in line and " ok" in line for line in lines) >= 1, f"no passing row for {check}"
    assert "FAIL" not in result.stdout and ", 0 failed, in " in lines[-1]


def test_without_a_gpu_says_why():
    path = available()
    if path.gpu:
        pytest.skip(f"this machine has a GPU ({path.reason}); the no-GPU message cannot be shown")
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"run_gpu_checks: no GPU: {path.reason}"


def test_unknown_section_is_refused():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--sections", "kernal"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown section 'kernal'" in result.stderr
