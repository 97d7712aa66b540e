"""Preprocessing at camera sizes: the runtime's pixel preprocessing per frame size, next to the tracking step.

Issue 12's goal (tiny, this machine): at 1280x720 and 1920x1080 each branch's preprocessing of a frame is at
most 10% of the tracking frame. Per frame size, the parts below are timed side by side (`stages.alternate`:
every part in every round, order rotated, so a noisy neighbour hits them alike), on the session's frame path
(`Session.frame_path`, what `Session.track_frame` and `Session.ask` call):
- mask_frame: one frame to the mask image encoder's input; runs on every tracked frame;
- mllm_frame: one frame to the vision encoder's input; mllm_clip: the clip of T frames a question samples;
- track_step: the tracking step (4 graphs + host memory bank), the same work at every frame size;
- postprocess: mask logits to the frame-size mask and box;
- capture: decoding the frame from JPEG to RGB (`cv2.imdecode` + the BGR->RGB swap, as an MJPEG camera's or an
  MJPG file's frame reaches the stream; quality 90). A file or camera frame costs at least that before the
  stream sees it; a raw frame from an iterator costs nothing here.
tracking frame = capture + mask_frame + track_step + postprocess (p50 each): what tpo-run's `frame_total`
holds for a tracked frame, sinks aside (issue 12 defines the frame that way: leaving capture out understates
it); mask share = mask_frame / tracking frame; mllm share = mllm_frame / tracking frame. The shares without
capture (a frame handed over already decoded) are reported beside them.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from tpo.contract import Preprocess

SIZES = ((320, 240), (1280, 720), (1920, 1080))
GOAL_SIZES = ("1280x720", "1920x1080")
GOAL_SHARE = 0.10
PARTS = ("capture", "mask_frame", "mllm_frame", "mllm_clip", "track_step", "postprocess")
JPEG_QUALITY = 90


def size_name(width: int, height: int) -> str:
    return f"{width}x{height}"


def row(size: str, p50: dict[str, float]) -> dict:
    """One size's row from the parts' p50 in ms: the tracking frame, both shares (with and without capture)
    and the goal (None off-goal)."""
    decoded = p50["mask_frame"] + p50["track_step"] + p50["postprocess"]
    frame = p50["capture"] + decoded
    mask_share, mllm_share = p50["mask_frame"] / frame, p50["mllm_frame"] / frame
    met = (mask_share <= GOAL_SHARE and mllm_share <= GOAL_SHARE) if size in GOAL_SIZES else None
    return {"size": size, **{f"{k}_ms": round(v, 4) for k, v in p50.items()},
            "tracking_frame_ms": round(frame, 4), "mask_share": round(mask_share, 4),
            "mllm_share": round(mllm_share, 4), "mask_share_decoded": round(p50["mask_frame"] / decoded, 4),
            "mllm_share_decoded": round(p50["mllm_frame"] / decoded, 4), "met": met}


def capture_fn(frame: np.ndarray) -> Callable[[], np.ndarray]:
    """Decoding `frame` ([H, W, 3] RGB) back from its JPEG bytes to RGB: one captured frame's cost."""
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {frame.shape[1]}x{frame.shape[0]} frame as JPEG")
    return lambda: cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def measure(frames_by_size: dict[str, np.ndarray], frame_path, step: Callable[[], object], logits: np.ndarray,
            timer: Callable[[str, dict], object], variant: str, pre: Preprocess) -> dict:
    """frames_by_size: "WxH" -> [T, H, W, 3] uint8 RGB (T = the clip a question samples); frame_path: the
    session's (`mask_frame`, `mllm_frames`, `mask_and_box`, `describe`); step: one tracking step of a primed
    tracker; logits: [h, w] mask logits; timer(name, {part: fn}) -> `stages.Timed` (the suite's `time_stage`);
    variant: whose step it is; pre: the manifest's `Preprocess`. Returns the report section."""
    rows, parts_stats, load = [], {}, {}
    for size, frames in frames_by_size.items():
        height, width = frames.shape[1:3]
        frame = frames[len(frames) // 2]
        fns = {
            "capture": capture_fn(frame),
            "mask_frame": lambda f=frame: frame_path.mask_frame(f),
            "mllm_frame": lambda f=frame: frame_path.mllm_frames(f[None]),
            "mllm_clip": lambda fr=frames: frame_path.mllm_frames(fr),
            "track_step": step,
            "postprocess": lambda h=height, w=width: frame_path.mask_and_box(logits, h, w),
        }
        timed = timer(f"preprocess[{size}]", fns)
        parts_stats[size] = {p: timed.stats(p) for p in PARTS}
        load[size] = getattr(timed, "load", None)
        rows.append(row(size, {p: parts_stats[size][p]["p50"] for p in PARTS}))
    clip = next(iter(frames_by_size.values())).shape[0] if frames_by_size else 0
    return {"variant": variant, "frame_path": frame_path.describe(), "mask_size": pre.mask.image_size,
            "mllm_size": pre.mllm.image_size, "clip_frames": int(clip),
            "goal": {"share": GOAL_SHARE, "sizes": list(GOAL_SIZES)}, "rows": rows, "parts_ms": parts_stats,
            "load": load}


def markdown(section: dict) -> list[str]:
    """The report.md lines of the section (empty without rows)."""
    rows = section.get("rows") or []
    if not rows:
        return []
    goal = section.get("goal", {})

    def ms(x: float) -> str:
        return f"{x:.2f}" if x < 100 else f"{x:.0f}"

    lines = [f"## Preprocessing at camera sizes ({section.get('variant', '?')}, {section.get('frame_path', '')})", "",
             f"Mask input {section.get('mask_size')}x{section.get('mask_size')} (every tracked frame), vision "
             f"encoder input {section.get('mllm_size')}x{section.get('mllm_size')} (a frame, and a question's clip of "
             f"{section.get('clip_frames')} frames); p50 ms, parts timed side by side. Tracking frame = capture "
             f"(JPEG decode to RGB) + mask_frame + tracking step + postprocess; goal: each branch's share <= "
             f"{100 * goal.get('share', GOAL_SHARE):.0f}% at {', '.join(goal.get('sizes', GOAL_SIZES))}. In brackets: "
             "the share of a frame handed over decoded (no capture).", ""]
    header = ["frame size", "capture ms", "mask_frame ms", "mllm frame ms",
              f"mllm clip ({section.get('clip_frames')}) ms", "tracking step ms", "postprocess ms",
              "tracking frame ms", "mask share", "mllm share", "goal"]
    table = [header, ["---"] * len(header)]
    for r in rows:
        goal_cell = "-" if r["met"] is None else ("met" if r["met"] else "NOT met")
        table.append([r["size"], ms(r["capture_ms"]), ms(r["mask_frame_ms"]), ms(r["mllm_frame_ms"]),
                      ms(r["mllm_clip_ms"]), ms(r["track_step_ms"]), ms(r["postprocess_ms"]),
                      ms(r["tracking_frame_ms"]),
                      f"{100 * r['mask_share']:.1f}% ({100 * r['mask_share_decoded']:.1f}%)",
                      f"{100 * r['mllm_share']:.1f}% ({100 * r['mllm_share_decoded']:.1f}%)", goal_cell])
    return lines + ["| " + " | ".join(str(c) for c in t) + " |" for t in table] + [""]
