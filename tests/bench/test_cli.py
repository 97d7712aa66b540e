"""tpo-bench argument errors: one line on stderr, exit status 2, nothing run."""

from __future__ import annotations

import pytest

from tpo.bench.cli import main, parse


@pytest.mark.parametrize("argv, needle", [
    (["--out", "X", "--backends", "tensorflow"], "--backends tensorflow"),
    (["--out", "X", "--precisions", "fp32,int8"], "pass its folder and the fp32 one with --artifacts"),
    (["--out", "X", "--precisions", "bf16"], "--precisions bf16"),
    (["--out", "X", "--precisions", "fp16"], "fp32 is required"),
    (["--out", "X", "--threads", "0"], "--threads 0"),
    (["--out", "X", "--rounds", "0"], "--rounds 0"),
    (["--out", "X", "--sizes", "huge"], "--sizes huge"),
    (["--out", "X", "--source-fps", "0"], "--source-fps"),
    (["--out", "X", "--artifacts", "/no/such/folder"], "no such folder"),
    (["--out", "X", "--threads", "two"], "invalid int value"),
    (["--quick"], "--out"),
    (["--out", "X", "--bogus"], "unrecognized arguments"),
])
def test_argument_errors_are_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tpo-bench: error: ")
    assert needle in err
    assert not (tmp_path / "X").exists()          # nothing was run


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["--out", str(f)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_quick_plan_and_lists(tmp_path):
    plan = parse(["--out", str(tmp_path), "--quick", "--backends", "torch,onnxruntime", "--threads", "1"])
    assert plan.quick and plan.sizes == ("tiny",) and plan.backends == ("torch", "onnxruntime")
    assert plan.threads == 1 and plan.rounds <= 3
    full = parse(["--out", str(tmp_path), "--precisions", "fp32", "fp16", "--sizes", "tiny", "small"])
    assert not full.quick and full.precisions == ("fp32", "fp16") and full.sizes == ("tiny", "small")


def test_calibrated_precisions_are_taken_with_their_folders(tmp_path):
    """int8 / int4 / mixed come from tpo-calibrate: accepted when --artifacts names the folders to measure."""
    (tmp_path / "fp32").mkdir()
    (tmp_path / "int8").mkdir()
    plan = parse(["--out", str(tmp_path / "o"), "--artifacts", str(tmp_path / "fp32"), str(tmp_path / "int8"),
                  "--precisions", "fp32", "int8", "mixed"])
    assert [p.value for p in plan.precisions] == ["fp32", "int8", "mixed"]
