"""The runtime's torch backend: found through the entry point, runs each graph's module, and a runtime
session on it answers like `tpo.model.generate`; weights that are not the export's are refused."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from tpo.contract import GraphEntry, Manifest, Precision
from tpo.contract import graphs as G
from tpo.errors import CheckpointError, ConfigError, TPOError
from tpo.runtime.backend import backend_names, open_backend
from tpo.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def bound(fp32_artifacts) -> TorchBackend:
    """fp32_artifacts: the session-wide export of tests/conftest.py."""
    return TorchBackend().bind(Manifest.load(fp32_artifacts))


def test_entry_point_finds_it_without_torch_in_the_runtime():
    assert "torch" in backend_names()
    backend = open_backend("torch")
    assert isinstance(backend, TorchBackend) and backend.name == "torch"
    assert backend.description.startswith(f"torch {torch.__version__} eager fp32 cpu")
    # listing the backends reads entry-point metadata only: the runtime stays torch-free
    code = ("import sys, tpo.runtime, tpo.runtime.session, tpo.runtime.backend as b; "
            "assert 'torch' in b.backend_names(); "
            "bad = [m for m in ('torch', 'tpo.model') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match="precision 'int8' unknown"):
        TorchBackend(precision="int8")
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        TorchBackend(threads=0)


def test_each_graph_matches_its_module(bound, fp32_artifacts):
    from tpo.export.examples import trace_example
    from tpo.model.checkpoint import load_checkpoint
    from tpo.model.graphs import graph_defs

    manifest = Manifest.load(fp32_artifacts)
    assert str(bound.checkpoint_used) in bound.description
    model, _ = load_checkpoint(manifest.model["checkpoint"]["path"], dtype="fp32")
    defs = {d.name: d for d in graph_defs(model)}
    assert set(manifest.graphs) <= set(defs)
    for name in manifest.graphs:
        d = defs[name]
        example = trace_example(d)
        runner = bound.load(manifest.graph(name))
        got = runner.run({t.name: x.numpy() for t, x in zip(d.inputs, example, strict=True)})
        with torch.no_grad():
            want = d.module(*example)
        want = (want,) if isinstance(want, torch.Tensor) else want
        assert list(got) == [t.name for t in d.outputs]
        for t, w in zip(d.outputs, want, strict=True):
            assert got[t.name].dtype == np.float32, (name, t.name)
            np.testing.assert_allclose(got[t.name], w.numpy(), rtol=1e-5, atol=1e-5, err_msg=f"{name}.{t.name}")
        assert runner.calls == 1 and runner.seconds > 0


def test_session_on_torch_answers_like_generate(bound, fp32_artifacts):
    """The runtime's host logic (prompt splice, KV-cache decoding, router, tracker) + this backend
    reproduce the PyTorch pipeline: same tokens, same trigger, same masks."""
    from tpo.calibration.clips import parity_clips
    from tpo.model.checkpoint import load_checkpoint
    from tpo.model.generate import generate
    from tpo.model.tokenizer import load_tokenizer
    from tpo.runtime.session import Session

    manifest = Manifest.load(fp32_artifacts)
    session = Session(manifest, bound)
    ckpt = manifest.model["checkpoint"]["path"]
    model, _ = load_checkpoint(ckpt, dtype="fp32")
    tokenizer = load_tokenizer(ckpt)
    clip = parity_clips(1, max_frames=6)[0]
    q = next(q for q in clip.queries if q.task == "track")
    ref = generate(model, tokenizer, clip.video, q.question)
    got = session.ask(q.question, clip.video.frames, clip.video.fps)
    assert got.token_ids == ref.token_ids
    assert got.task == ref.task == "track"
    assert len(got.track) == len(ref.track) == 1
    # two model instances agree to float rounding, which may flip a pixel whose logit is ~0
    got_masks, ref_masks = got.track[0]["masks"], ref.track[0].masks
    assert got_masks.shape == ref_masks.shape and (got_masks != ref_masks).sum() <= 4
    np.testing.assert_allclose(got.prompts["track"], ref.prompts["track"].numpy(), rtol=1e-4, atol=1e-4)


def _with_checkpoint(manifest: Manifest, **changes) -> Manifest:
    data = copy.deepcopy(manifest.to_json())
    data["model"]["checkpoint"].update(changes)
    return Manifest.from_json(data, manifest.root)


def test_other_weights_are_refused_unless_given(fp32_artifacts):
    manifest = Manifest.load(fp32_artifacts)
    info = manifest.model["checkpoint"]
    shard = next(iter(info["shards"]))
    wrong = {shard: "0" * 64}
    with pytest.raises(CheckpointError) as e:
        TorchBackend().bind(_with_checkpoint(manifest, shards=wrong))
    msg = str(e.value)
    assert "\n" not in msg and shard in msg and "does not match" in msg and "checkpoint=" in msg
    with pytest.raises(CheckpointError, match="is missing; pass checkpoint="):
        TorchBackend().bind(_with_checkpoint(manifest, path=str(fp32_artifacts / "nowhere")))
    # an explicit checkpoint= is used as given, and the description says it is not the export's
    given = TorchBackend(checkpoint=info["path"]).bind(_with_checkpoint(manifest, shards=wrong))
    assert "differ from the ones the artifacts were exported from" in given.description
    with pytest.raises(TPOError, match="one backend per artifacts folder"):
        given.load(GraphEntry(G.CONNECTOR.name, "connector.onnx", "", 0, Precision.FP32, (), (),
                              root=fp32_artifacts.parent))


def test_a_stream_on_the_torch_backend_reports_the_precision_that_ran(fp16_artifacts):
    """The summary's `precision` is what ran (torch eager at its own precision), not the artifacts'."""
    from tpo.data.synthetic import make_clip
    from tpo.runtime.session import open as open_session
    from tpo.runtime.sources import open_source

    session = open_session(fp16_artifacts, backend="torch")
    clip = make_clip(0, 1000)
    q = next(q.question for q in clip.queries if q.task == "conversation")
    summary = list(session.stream(open_source(iter(clip.frames[:8]), fps=clip.fps), q))[-1].event("summary")
    assert summary["precision"] == "fp32" and summary["precision"] == session.backend.precision
    assert summary["artifacts_precision"] == session.manifest.precision.value
