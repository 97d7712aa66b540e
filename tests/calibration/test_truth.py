"""Ground truth of an export (calibration/truth.py): the same numbers as `tpo-eval` gives the checkpoint it came
from, and the gate's rule for a drop against fp32."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tpo.calibration.gate import TRUTH_POINTS, agreement
from tpo.calibration.sources import load_clips
from tpo.calibration.truth import HEADLINE, compare_truth, headline
from tpo.contract import Manifest, Precision
from tpo.data.synthetic import make_clip

CLIPS = 3


@pytest.fixture(scope="module")
def fp32_gate(fp32_artifacts):
    from tpo.runtime.backend import OnnxRuntimeBackend
    from tpo.runtime.session import Session

    session = Session(Manifest.load(fp32_artifacts), OnnxRuntimeBackend(threads=1))
    clips = load_clips(f"synthetic:{CLIPS}@1000", min_frames=8, max_frames=None)
    return agreement(session, session, clips, Precision.INT8)


def test_the_export_scores_as_tpo_eval_scores_its_checkpoint(fp32_gate):
    """tpo-eval (the PyTorch model, `tpo.train.evaluate`) and truth.py (the runtime on the fp32 export of the same
    checkpoint) on the same rendered clips: every metric equal (the export matches the model to ~1e-6; a mask
    pixel may flip at a threshold, hence the small tolerance on the mask and box numbers)."""
    from tpo.train.eval_cli import load_model
    from tpo.train.evaluate import evaluate

    model, tokenizer, _ = load_model(None, None)
    dataset = SimpleNamespace(root="synthetic@1000", clips=[make_clip(i, 1000) for i in range(CLIPS)])
    expected = evaluate(model, tokenizer, dataset)["metrics"]
    got = fp32_gate["ground_truth_metrics"]["fp32"]
    assert got["routing"]["accuracy"] == expected["routing_accuracy"]
    for section in ("track", "region", "temporal", "conversation"):
        for name, value in got[section].items():
            assert value == pytest.approx(expected[section][name], abs=2e-3), (section, name)
    assert {f"{s} {n}" for s, n in HEADLINE} == set(fp32_gate["ground_truth"])


def test_one_session_against_itself_has_no_drop(fp32_gate):
    rows = fp32_gate["ground_truth"]
    assert all(r["delta"] == 0 for r in rows.values()) and fp32_gate["passed"]
    assert rows["routing accuracy"]["questions"] == 4 * CLIPS and rows["track J&F"]["questions"] == CLIPS


def _side(values: dict[str, float], questions: int) -> dict:
    return {k: {"value": v, "questions": questions} for k, v in values.items()}


def test_a_drop_fails_past_two_points_or_one_questions_worth():
    ref = _side({"track J&F": 0.60, "temporal R1@0.5": 0.80}, 50)
    ok, failures = compare_truth(ref, _side({"track J&F": 0.585, "temporal R1@0.5": 0.82}, 50), TRUTH_POINTS)
    assert not failures and ok["track J&F"]["delta"] == pytest.approx(-0.015)
    _, failures = compare_truth(ref, _side({"track J&F": 0.57, "temporal R1@0.5": 0.80}, 50), TRUTH_POINTS)
    assert len(failures) == 1 and failures[0].startswith("track J&F (ground truth): 0.600 -> 0.570")
    # four clips: one question flipped (0.25) is within what the gate can resolve, two are not
    few = _side({"temporal R1@0.5": 1.0}, 4)
    assert not compare_truth(few, _side({"temporal R1@0.5": 0.75}, 4), TRUTH_POINTS)[1]
    assert compare_truth(few, _side({"temporal R1@0.5": 0.5}, 4), TRUTH_POINTS)[1]


def test_headline_reads_the_summary_sections():
    summary = {"routing": {"accuracy": 1.0}, "track": {"success_AUC": 0.5, "J&F": 0.25}}
    got = headline(summary, {"routing": 8, "track": 2})
    assert got == {"routing accuracy": {"value": 1.0, "questions": 8},
                   "track success_AUC": {"value": 0.5, "questions": 2},
                   "track J&F": {"value": 0.25, "questions": 2}}
    assert np.isfinite(list(v["value"] for v in got.values())).all()
