"""The embedded tiny checkpoint: it verifies, loads, and routes held-out queries to the right head."""

import json

import pytest

from tpo.data.files import Dataset
from tpo.data.synthetic import make_clip
from tpo.model.checkpoint import default_checkpoint, load_checkpoint, verify_checkpoint
from tpo.model.tokenizer import load_tokenizer
from tpo.train.evaluate import evaluate


def test_embedded_checkpoint_verifies_and_records_how_it_was_made():
    path = default_checkpoint()
    report = verify_checkpoint(path)
    assert report.ok and report.stored_float_dtype == "float16"
    record = json.loads((path / "training.json").read_text())
    assert record["recipe"]["seed"] == 0 and 0 <= record["metrics"]["metrics"]["routing_accuracy"] <= 1


def test_embedded_checkpoint_routes_held_out_queries():
    """Routing is a bar the shipped checkpoint reaches (>= 0.95); the other task metrics of the same run
    are recorded in training.json (measured on 50 held-out clips)."""
    path = default_checkpoint()
    model, _ = load_checkpoint(path, dtype="fp32")
    tok = load_tokenizer(path)
    held_out = Dataset(root=path, meta={}, clips=[make_clip(i, 1000) for i in range(4)])
    result = evaluate(model, tok, held_out, tasks=("region", "temporal", "conversation"))
    assert result["metrics"]["routing_accuracy"] >= 0.95


@pytest.mark.xfail(strict=True, reason="the shipped checkpoint was trained on generator v1 (R1@0.5 0.81 on v1's "
                   "16 clips); on generator v2's held-out clips it scores 0.19, under the bar until a v2 run is "
                   "shipped (docs/training.md, issue 15): then this marker goes")
def test_embedded_checkpoint_grounds_held_out_moments():
    """Temporal R1@0.5 >= 0.6 is the other bar of the issue the shipped checkpoint reached on generator v1's
    held-out clips (0.86 on 50; 0.81 on these 16). Region, answers and tracking miss theirs: see
    docs/training.md."""
    path = default_checkpoint()
    model, _ = load_checkpoint(path, dtype="fp32")
    held_out = Dataset(root=path, meta={}, clips=[make_clip(i, 1000) for i in range(16)])
    result = evaluate(model, load_tokenizer(path), held_out, tasks=("temporal",))
    assert result["counts"]["queries"] == 16
    assert result["metrics"]["temporal"]["R1@0.5"] >= 0.6
