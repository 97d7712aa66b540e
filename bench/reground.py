"""Re-grounding on and off on clips where the tracked object leaves and comes back: does re-asking help?

    python -m tpo.bench.reground --artifacts DIR [--clips 60] [--lost-frames 4 15] [--out FILE]

Clips: the generator's held-out clips (seed 1000, the first `--clips`) whose track question's object has two or
more visible spans (it exits and re-enters, or is hidden and shows again). Each is streamed whole (a file
stream: every frame processed, answers awaited, so runs are reproducible) with its track question, once with
`reground` off and once on, per `--lost-frames` value. Scored against the clip's ground truth with the
benchmarks' metrics (`tpo.data.metrics`): OTB success AUC (frames where the object is unseen left out) and
DAVIS J&F (every frame; an empty mask where it is absent scores 1), the stream's first object; plus the
lost / found / reground events counted. Writes JSON to stdout (and `--out`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tpo.data import metrics
from tpo.data.synthetic import make_clip
from tpo.errors import one_line_errors

from .report import emit_json

HELD_OUT_SEED = 1000


def reentry_clips(count: int) -> list[tuple]:
    """(clip, track query) of the first `count` held-out clips whose tracked object has several visible spans."""
    out = []
    for i in range(count):
        clip = make_clip(i, HELD_OUT_SEED)
        q = next((q for q in clip.queries if q.task == "track"), None)
        if q is not None and len(clip.spans[q.object_id]) >= 2:
            out.append((clip, q))
    return out


def run_clip(session, clip, q, reground: bool, lost_frames: int) -> dict:
    """One stream of the whole clip; the first object's boxes and masks scored, the events counted."""
    from tpo.runtime.sources import open_source

    stream = session.stream(open_source(iter(clip.frames), fps=float(clip.fps)), q.question, reground=reground,
                            lost_frames=lost_frames, with_masks=False)
    h, w = clip.frames.shape[1:3]
    boxes, masks, events = [], [], {"lost": 0, "found": 0, "reground": 0}
    for result in stream:
        for e in result.events:
            if e.get("type") == "object" and e.get("event") in events:
                events[e["event"]] += 1
        if result.frame is None:
            continue
        obj = next((o for o in result.objects if o.id == 0 and o.kind == "track"), None)
        boxes.append(obj.box if obj is not None and obj.present else None)
        masks.append(obj.mask if obj is not None and obj.present and obj.mask is not None else np.zeros((h, w), bool))
    gt_boxes = [clip.box(t, q.object_id) for t in range(clip.num_frames)]
    return {"success_AUC": metrics.tracking_success_auc(boxes, gt_boxes),
            "J&F": metrics.jf_score(masks, clip.masks(q.object_id))["J&F"], **events,
            "routed": stream.task}


def bench(artifacts: Path, clips: int, lost_frames: list[int], threads: int) -> dict:
    import tpo.runtime

    session = tpo.runtime.open(artifacts, threads=threads)
    chosen = reentry_clips(clips)
    report = {"artifacts": str(artifacts), "held_out_seed": HELD_OUT_SEED, "clips_scanned": clips,
              "clips": [c.name for c, _ in chosen], "runs": []}
    for lf in lost_frames:
        rows = {}
        for on in (False, True):
            rows[on] = [run_clip(session, c, q, on, lf) for c, q in chosen]
        run = {"lost_frames": lf}
        for on, name in ((False, "off"), (True, "on")):
            run[name] = {k: float(np.mean([r[k] for r in rows[on]])) for k in ("success_AUC", "J&F")}
            run[name].update({k: int(sum(r[k] for r in rows[on])) for k in ("lost", "found", "reground")})
        run["per_clip"] = [{"clip": c.name, "off": rows[False][i], "on": rows[True][i]}
                           for i, (c, _) in enumerate(chosen)]
        run["better"] = run["on"]["success_AUC"] > run["off"]["success_AUC"]
        report["runs"].append(run)
    return report


@one_line_errors("python -m tpo.bench.reground")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.bench.reground", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--clips", type=int, default=60, help="held-out clips to scan for exits and re-entries")
    p.add_argument("--lost-frames", type=int, nargs="+", default=[4, 15],
                   help="one pair of runs (re-grounding off, on) per value")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not (args.artifacts / "manifest.json").is_file():
        print(f"python -m tpo.bench.reground: --artifacts {args.artifacts}: no manifest.json there", file=sys.stderr)
        return 2
    if args.clips < 1 or any(v < 1 for v in args.lost_frames):
        print("python -m tpo.bench.reground: --clips and --lost-frames must be >= 1", file=sys.stderr)
        return 2
    emit_json(bench(args.artifacts, args.clips, args.lost_frames, args.threads), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
