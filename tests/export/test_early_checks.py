"""tpo-export checks every argument (and whether a tensorrt target can run) before torch is imported.

Each case runs the command in a fresh interpreter and asserts, after `main` returned, that torch, the
model code and the exporter were never imported: a wrong argument costs a second, not a model load.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "tpo.export.exporter", "tpo.model.config")
RUN = (
    "import sys\n"
    "from tpo.export.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
    "print('imported:', ','.join(heavy) or '-')\n"
    "sys.exit(rc)\n"
)


def run_export(*argv: str) -> tuple[int, str, str]:
    """(exit code, stderr, what heavy modules were imported) of `tpo-export ARGV` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, timeout=120)
    imported = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                     if line.startswith("imported:")), "?")
    return out.returncode, out.stderr.strip(), imported


def _cases(tmp):
    (tmp / "exists").mkdir()
    (tmp / "file").write_text("not a folder")
    new = str(tmp / "new")
    return {
        "bf16": (["--precision", "bf16", "--out", new], "--precision 'bf16': choose one of fp32, fp16"),
        "int8": (["--precision", "int8", "--out", new], "--precision int8 quantises from real activations: pass --calibration-data"),
        "int8 bad data": (["--precision", "int8", "--calibration-data", str(tmp / "nope"), "--out", new],
                          f"calibration data {tmp / 'nope'}: no such file or folder"),
        "opset": (["--opset", "9", "--out", new], "--opset 9: supported opsets are 18..23"),
        "targets": (["--targets", "onnx,coreml", "--out", new], "--targets onnx,coreml: choose from onnx, tensorrt"),
        "no targets": (["--targets", ",", "--out", new], "--targets : choose from"),
        "out exists": (["--out", str(tmp / "exists")], "already exists; pass --force to replace it"),
        "out is a file": (["--out", str(tmp / "file"), "--force"], "exists and is not a folder"),
        "out under a file": (["--out", str(tmp / "file" / "sub")], f"{tmp / 'file'} is a file, not a folder"),
        "checkpoint": (["--checkpoint", str(tmp / "nope"), "--out", new], f"{tmp / 'nope'}: no such checkpoint"),
        "parity clips": (["--parity-clips", "0", "--out", new], "--parity-clips 0: must be >= 1"),
        "config": (["--config", "huge", "--out", new], "--config 'huge': unknown config; choose one of"),
        "config without checkpoint": (["--config", "small", "--out", new], "no embedded checkpoint for it"),
    }


CASES = ["bf16", "int8", "int8 bad data", "opset", "targets", "no targets", "out exists", "out is a file", "out under a file",
         "checkpoint", "parity clips", "config", "config without checkpoint"]


def test_the_case_list_is_complete(tmp_path):
    assert sorted(_cases(tmp_path)) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_bad_argument_is_one_line_exit_2_without_importing_torch(case, tmp_path):
    argv, message = _cases(tmp_path)[case]
    rc, err, imported = run_export(*argv, "--no-progress")
    assert rc == 2, err
    assert err.startswith("tpo-export: ") and message in err and len(err.splitlines()) == 1, err
    assert imported == "-", f"imported {imported} before refusing"
    assert not (tmp_path / "new").exists()


def test_unknown_config_lists_the_presets(tmp_path):
    from tpo.model.presets import preset_names

    _, err, _ = run_export("--config", "huge", "--out", str(tmp_path / "x"))
    assert all(name in err for name in preset_names()) and "tiny" in err


def test_tensorrt_target_that_cannot_run_here_is_refused_before_exporting(tmp_path):
    from tpo.export.tensorrt_probe import TensorRTUnavailable, probe_tensorrt

    try:
        probe_tensorrt()
    except TensorRTUnavailable as e:
        reason = str(e)
    else:
        pytest.skip("this machine has a GPU and TensorRT: the tensorrt target runs here")
    out = tmp_path / "art"
    rc, err, imported = run_export("--targets", "onnx,tensorrt", "--out", str(out), "--no-progress")
    assert rc == 4 and len(err.splitlines()) == 1, err
    assert err.startswith(f"tpo-export: {reason}; nothing exported")
    assert imported == "-" and not out.exists() and list(tmp_path.iterdir()) == []
