"""tpo.contract: the ground floor (no torch, no onnx), each tensor name spelled once, the typed manifest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tpo.contract import GRAPHS, MANIFEST_FILE, Manifest, Precision
from tpo.contract import graphs as G
from tpo.errors import CheckpointError, InputError

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tpo", "data", "model", "train", "export", "calibration", "kernels", "runtime", "bench", "torch_backend")
CONTRACT = Path("tpo/contract/graphs.py")
# Generic words that are also graph tensor names, used elsewhere for something that is not a graph tensor:
# word -> (what it means there, the files). A new use of one of these words fails the test until reviewed.
OTHER_MEANINGS = {
    "image": ("the media of a question ('image' | 'video', the release's <Image> tag)",
              {"export/task_parity.py", "model/cli.py", "model/generate.py", "model/prompt.py", "model/tokenizer.py",
               "runtime/session.py", "tpo/contract/tasks.py", "train/evaluate.py", "train/probes.py",
               "train/recipe.py", "train/runtime_eval.py", "train/sample.py"}),
    "boxes": ("the dynamic dimension of the same name, a result's list of boxes, a plot's box artists",
              {"bench/sizes.py", "export/examples.py", "export/exporter.py", "export/task_parity.py",
               "runtime/session.py", "runtime/tasks/track.py", "bench/plots.py", "bench/full_size.py",
               "export/depth_gate.py", "calibration/truth.py"}),
    "iou": ("a metric or an event's field", {"export/task_parity.py", "runtime/tasks/track.py", "runtime/results.py",
                                             "runtime/session.py", "train/heads/region.py", "train/mask_pretrain.py",
                                             "calibration/truth.py"}),
    "saliency": ("a field of the temporal answer and its event", {"runtime/session.py", "runtime/sinks.py",
                                                                  "runtime/tasks/temporal.py"}),
    "present": ("the track event's field", {"runtime/results.py", "train/runtime_eval.py"}),
    "memory": ("memory use (RSS) in the bench report, a memory-bound stage",
               {"bench/floor.py", "bench/report.py", "bench/suite.py", "bench/full_size.py"}),
    "logits": ("a device buffer of the frame path", {"kernels/params.py", "runtime/frame_path.py"}),
    "position_ids": ("BERT's buffer in the Q-Former's state dict", {"model/connector.py"}),
}


def test_contract_imports_neither_torch_nor_onnx():
    code = ("import sys, tpo.contract, tpo.contract.graphs, tpo.contract.manifest, tpo.contract.tasks; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'tpo.model', 'tpo.runtime') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _tensor_names() -> set[str]:
    names = {t.name for g in GRAPHS for t in g.inputs + g.outputs}
    kv = G.LLM.kv
    return names | {kv.past_key, kv.past_value, kv.present_key, kv.present_value} | {"past_key_values", "present"}


def test_every_graph_tensor_name_is_spelled_in_the_contract_only():
    """A grep over the package sources (tests may pin names on their own): each graph tensor name as a string
    literal appears in tpo/contract/graphs.py and nowhere else (but the listed other meanings of a word)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO)
            text = path.read_text()
            for name in _tensor_names():
                if re.search(r"""["']""" + re.escape(name) + r"""["'.]""", text):
                    found.setdefault(name, set()).add(str(rel))
    stray = {name: sorted(f for f in files if f != str(CONTRACT) and f not in OTHER_MEANINGS.get(name, ("", ()))[1])
             for name, files in found.items()}
    stray = {name: files for name, files in stray.items() if files}
    assert not stray, f"graph tensor names spelled outside the contract: {stray}"
    assert all(str(CONTRACT) in files for name, files in found.items() if name in {t.name for t in G.LLM.inputs})


def test_specs_build_feeds_and_read_outputs_by_the_declared_names():
    feed = G.MASK_IMAGE_ENCODER.feed(pixels=1)
    assert list(feed) == [t.name for t in G.MASK_IMAGE_ENCODER.inputs]
    with pytest.raises(InputError, match=r"not declared.*missing"):
        G.MASK_IMAGE_ENCODER.feed(pixel=1)
    with pytest.raises(InputError, match="past cache"):
        G.LLM.feed(inputs_embeds=1, attention_mask=2, position_ids=3)
    past = dict.fromkeys(G.LLM.kv.past_names(2), 0)
    assert len(G.LLM.feed(past=past, inputs_embeds=1, attention_mask=2, position_ids=3)) == 3 + 4
    values = {t.name: i for i, t in enumerate(G.LLM.outputs)} | dict.fromkeys(G.LLM.kv.present_names(2), 9)
    out = G.LLM.outputs_of(values)
    assert out.logits == 0 and out.hidden_states == 1 and sorted(out.present) == sorted(past)
    with pytest.raises(CheckpointError, match="missing"):
        G.CONNECTOR.outputs_of({})


def test_shape_templates_resolve_with_the_configuration_sizes():
    sizes = dict.fromkeys(G.SIZES, 7)
    inputs, outputs = G.LLM.tensors(sizes, num_layers=3)
    assert len(inputs) == 3 + 6 and len(outputs) == 2 + 6
    assert all(t.resolved for t in inputs + outputs)
    assert inputs[3].shape == ("batch", 7, "past_sequence", 7)
    with pytest.raises(KeyError, match="no size 'hidden_size'"):
        G.LLM.tensors({}, num_layers=1)


# ------------------------------------------------------------------------------------------ the manifest
def test_manifest_round_trips_exactly(fp32_artifacts):
    data = json.loads((fp32_artifacts / MANIFEST_FILE).read_text())
    manifest = Manifest.load(fp32_artifacts)
    assert json.loads(json.dumps(manifest.to_json())) == data
    assert manifest.precision is Precision.FP32 and manifest.llm.past_names()[0] == G.LLM.kv.past_names(1)[0]
    assert manifest.graph(G.LLM.name).path.is_file()
    manifest.check_graph_names()


@pytest.mark.parametrize("where", ["graph", "tokenizer", "extra", "embeddings"])
@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_paths_that_leave_the_artifacts_folder_are_refused_before_opening(fp32_artifacts, tmp_path, where, kind):
    art = tmp_path / "art"
    shutil.copytree(fp32_artifacts, art)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((art / "connector.onnx").read_bytes())
    data = json.loads((art / MANIFEST_FILE).read_text())
    if kind == "symlink":
        (art / "link.onnx").symlink_to(outside)
    path = {"relative": "../outside.onnx", "absolute": str(outside), "symlink": "link.onnx"}[kind]
    if where == "graph":
        data["graphs"][G.CONNECTOR.name]["file"] = path
    elif where == "tokenizer":
        data["files"]["tokenizer"]["file"] = path
    elif where == "embeddings":
        data["files"]["embeddings"]["file"] = path
    else:
        extra = data["files"]["tokenizer"]["extra_files"]
        extra[path] = extra.pop(next(iter(extra)))
    (art / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"(must be relative|leaves the artifacts folder|outside)"):
        Manifest.load(art)


def test_a_manifest_with_unknown_fields_or_sections_missing_is_one_line(fp32_artifacts, tmp_path):
    data = json.loads((fp32_artifacts / MANIFEST_FILE).read_text())
    bad = json.loads(json.dumps(data))
    bad["tracker"]["num_maskmemm"] = 1
    with pytest.raises(CheckpointError, match=r"tracker: unknown field\(s\) \['num_maskmemm'\]"):
        Manifest.from_json(bad, tmp_path)
    bad = json.loads(json.dumps(data))
    del bad["llm"]
    with pytest.raises(CheckpointError, match="missing section or field 'llm'"):
        Manifest.from_json(bad, tmp_path)
    bad = json.loads(json.dumps(data))
    bad["graphs"][G.LLM.name]["precision"] = "bf16"
    with pytest.raises(CheckpointError, match="precision 'bf16'"):
        Manifest.from_json(bad, tmp_path)
