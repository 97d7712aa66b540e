"""Bad input to the streamed export that `test_streamed.py` does not cover: a checkpoint of another depth (same
widths, so no shape differs and only the tensor names tell), a disk that fills up while graphs are written, a
Ctrl-C during the weight gate (after every graph is on disk), and a real SIGINT to a running `tpo-export`
process. Each: one line on stderr, a non-zero exit, and nothing at --out nor a partial folder beside it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tpo.contract import graphs as G
from tpo.export import cli
from tpo.export.exporter import ExportOptions, export_artifacts
from tpo.model.config import CONFIG_DIR
from tpo.model.random_checkpoint import write_random_checkpoint


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return write_random_checkpoint("small", tmp_path_factory.mktemp("small") / "ckpt", seed=1).path


def _run(argv, capsys) -> tuple[int, list[str]]:
    code = cli.main(argv)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _small_with_llm_layers(folder: Path, layers: int) -> Path:
    data = json.loads((CONFIG_DIR / "small.json").read_text())
    data["llm"]["num_layers"] = layers
    path = folder / f"small-{layers}-layers.json"
    path.write_text(json.dumps(data))
    return path


def _only_out_left(folder: Path, keep: set[str]) -> None:
    """Nothing but `keep` in `folder`: no --out, no `.<out>.partial-*`, no parity report."""
    assert {p.name for p in folder.iterdir()} == keep


def test_checkpoint_of_another_depth(small_ckpt, tmp_path, capsys):
    """small has 8 LLM layers: a config with 9 misses layer 8's tensors, one with 7 finds layer 7's extra."""
    deeper = _small_with_llm_layers(tmp_path, 9)
    code, err = _run(["--checkpoint", str(small_ckpt), "--config", str(deeper), "--stream", "on", "--out",
                      str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "layers.8." in err[0] and "is missing" in err[0] and f"--config {deeper}" in err[0]
    shallower = _small_with_llm_layers(tmp_path, 7)
    code, err = _run(["--checkpoint", str(small_ckpt), "--config", str(shallower), "--stream", "on", "--out",
                      str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "unexpected tensor" in err[0] and "layers.7." in err[0]
    _only_out_left(tmp_path, {deeper.name, shallower.name})


def test_disk_full_while_writing_a_graph(tmp_path, capsys, monkeypatch):
    """The free-space check passed, then another process filled the disk: the OSError is one line naming the
    file, exit 2, and the partial folder is gone (its space given back)."""
    from tpo.export import streamed

    real, calls = streamed.write_graph, {"n": 0}

    def fills_up(defn, recipes, reader, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) + ".data")
        return real(defn, recipes, reader, path, *args, **kwargs)

    monkeypatch.setattr(streamed, "write_graph", fills_up)
    code, err = _run(["--stream", "on", "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("tpo-export: ") and "the disk is full" in err[0] and ".onnx.data" in err[0]
    _only_out_left(tmp_path, set())


def test_ctrl_c_during_the_weight_gate(tmp_path, monkeypatch):
    """Every graph is written when the gate starts: an interrupt there still leaves nothing behind."""
    from tpo.export import weight_check

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(weight_check, "check_graph", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_artifacts(ExportOptions(out=tmp_path / "o", graphs=(G.BOX_ENCODER.name, G.TASK_ROUTER.name),
                                       skip_task_parity=True, stream="on", gate="depth", progress=False))
    _only_out_left(tmp_path, set())
