"""tpo.export.standalone (the bench's random-weight sizes): chosen graphs written once into a cache as typed
entries, and the bench's eager and ONNX Runtime runners giving the same outputs on them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tpo.bench.backends import eager_runner, quiet_onnxruntime  # noqa: E402
from tpo.bench.inputs import example_feed  # noqa: E402
from tpo.contract import GraphEntry, Precision, sha256_file  # noqa: E402
from tpo.contract import graphs as G  # noqa: E402
from tpo.errors import ConfigError  # noqa: E402

GRAPH = G.BOX_ENCODER.name


@pytest.fixture(scope="module")
def model():
    from tpo.export.standalone import random_model

    return random_model("tiny")


def test_written_once_as_typed_entries(model, tmp_path):
    from tpo.export.standalone import export_standalone

    logs: list[str] = []
    out = export_standalone(model, (GRAPH,), ("fp32", Precision.FP16), tmp_path, weights="random, seed 0",
                            log=logs.append)
    assert set(out.entries) == {(GRAPH, Precision.FP32), (GRAPH, Precision.FP16)} and list(out.defs) == [GRAPH]
    for precision, entry in ((p, out.entries[(GRAPH, p)]) for p in (Precision.FP32, Precision.FP16)):
        assert isinstance(entry, GraphEntry) and entry.precision is precision
        assert entry.path.parent == out.folder and entry.sha256 == sha256_file(entry.path)
        assert [t.name for t in entry.inputs] == list(G.BOX_ENCODER.input_names)
    assert len(logs) == 2
    again = export_standalone(model, (GRAPH,), (Precision.FP32, Precision.FP16), tmp_path, weights="random, seed 0",
                              log=logs.append)
    assert len(logs) == 2 and again.folder == out.folder and again.entries == out.entries     # from the cache
    other = export_standalone(model, (GRAPH,), (Precision.FP32,), tmp_path, weights="random, seed 1",
                              log=logs.append)
    assert other.folder != out.folder and len(logs) == 3          # other weights: another key
    with pytest.raises(ConfigError, match="not in the contract"):
        export_standalone(model, ("no_such_graph",), (Precision.FP32,), tmp_path, weights="w", log=logs.append)


def test_eager_and_onnxruntime_runners_agree(model, tmp_path):
    from tpo.export.standalone import export_standalone

    out = export_standalone(model, (GRAPH,), (Precision.FP32,), tmp_path, weights="random, seed 0", log=print)
    feed = example_feed(out.defs[GRAPH], {"boxes": 3})
    eager = G.BOX_ENCODER.outputs_of(eager_runner(out.defs[GRAPH]).run(feed))
    backend = quiet_onnxruntime(threads=1)
    assert "spinning off" in backend.description
    ort = G.BOX_ENCODER.outputs_of(backend.load(out.entries[(GRAPH, Precision.FP32)]).run(feed))
    assert eager.box_embeds.shape == (3, model.cfg.llm.hidden_size)
    np.testing.assert_allclose(ort.box_embeds, eager.box_embeds, rtol=1e-4, atol=1e-5)
