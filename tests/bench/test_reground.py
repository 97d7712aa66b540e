"""The re-grounding bench (`python -m tpo.bench.reground`): the clips it picks, one scored stream, its arguments.
What re-grounding is worth is measured by the bench (docs/runtime.md), never asserted here."""

from __future__ import annotations

import pytest

from tpo.bench import reground


def test_it_picks_the_clips_whose_tracked_object_leaves_and_returns():
    chosen = reground.reentry_clips(10)
    # generator v2: clips 3, 5 and 9 track an object that stays in view
    assert [c.name for c, _ in chosen] == ["clip_00000", "clip_00001", "clip_00002", "clip_00004", "clip_00006",
                                           "clip_00007", "clip_00008"]
    for clip, q in chosen:
        assert q.task == "track" and len(clip.spans[q.object_id]) >= 2


def test_one_stream_is_scored_against_the_ground_truth(fp32_artifacts):
    import tpo.runtime

    session = tpo.runtime.open(fp32_artifacts, threads=1)
    clip, q = reground.reentry_clips(10)[1]
    row = reground.run_clip(session, clip, q, reground=True, lost_frames=4)
    assert 0.0 <= row["success_AUC"] <= 1.0 and 0.0 <= row["J&F"] <= 1.0 and row["routed"] == "track"
    assert row["found"] <= row["lost"] and all(isinstance(row[k], int) for k in ("lost", "found", "reground"))


@pytest.mark.parametrize("argv, needle", [(["--artifacts", "/no/such"], "no manifest.json"),
                                          (["--artifacts", "{art}", "--clips", "0"], "must be >= 1")])
def test_bad_arguments_are_one_line(argv, needle, fp32_artifacts, capsys):
    code = reground.main([a.format(art=fp32_artifacts) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err
