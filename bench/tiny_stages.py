"""Part 2 of a run: the tiny model's stages on the inputs recorded from the clip, side by side per variant.

- every graph on its recorded feed (the LLM twice: the prompt's prefill and one decode step over its past);
- composites: the per-frame tracking step (the four tracked-frame graphs + the host memory bank) and the frame
  path (preprocess + step + postprocess at 320x240), both on a tracker past its prompted frame;
- host stages, the same code for every runtime backend (PyTorch's own where the model side has one): capture,
  preprocessing of a clip and of a frame, postprocessing, the JSONL sink;
- both branches' preprocessing at camera sizes next to the tracking step (`preprocessing.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tpo.contract import Precision
from tpo.contract import graphs as G

from .backends import EngineClock, Variant
from .inputs import cycling_capture, resized
from .measure import sum_counts
from .plan import BASELINE, LLM_STAGES, TRACKED_STEP_GRAPHS

if TYPE_CHECKING:
    from .suite import Suite

HOST = "runtime-numpy"
HOST_STAGES = ("capture", "preprocess_clip", "preprocess_frame", "postprocess", "sink")
PREFILL, DECODE = LLM_STAGES


def graph_stages(suite: Suite) -> list[tuple[str, G.GraphSpec, str]]:
    """(stage, graph, label) of every graph stage, in report order."""
    frames, tokens = suite.manifest.preprocess.mllm.num_frames, suite.captured.prompt_tokens
    return [
        (G.VISION_ENCODER.name, G.VISION_ENCODER, f"vision encoder (T={frames})"),
        (G.VISION_ENCODER_IMAGE.name, G.VISION_ENCODER_IMAGE, "vision encoder (T=1)"),
        (G.CONNECTOR.name, G.CONNECTOR, "connector"),
        (PREFILL, G.LLM, f"LLM prefill ({tokens} tokens)"),
        (DECODE, G.LLM, "LLM decode (per token)"),
        (G.TASK_ROUTER.name, G.TASK_ROUTER, "task router"),
        (G.BOX_ENCODER.name, G.BOX_ENCODER, "box encoder"),
        (G.TEMPORAL_HEAD.name, G.TEMPORAL_HEAD, "temporal head"),
        (G.MASK_IMAGE_ENCODER.name, G.MASK_IMAGE_ENCODER, "mask: image encoder"),
        (G.MASK_DECODER_PROMPTED.name, G.MASK_DECODER_PROMPTED, "mask: decoder, prompted (frame 0)"),
        (G.MEMORY_ATTENTION.name, G.MEMORY_ATTENTION, "mask: memory attention"),
        (G.MASK_DECODER_TRACKED.name, G.MASK_DECODER_TRACKED, "mask: decoder, tracked"),
        (G.MEMORY_ENCODER.name, G.MEMORY_ENCODER, "mask: memory encoder"),
    ]


def input_shapes(spec: G.GraphSpec, feed: dict) -> dict[str, list[int]]:
    """The shapes of a feed's declared inputs (the LLM's cache left out: one entry per layer)."""
    return {k: list(np.shape(x)) for k, x in feed.items() if k in spec.input_names}


def run_stages(suite: Suite) -> None:
    stages_list = graph_stages(suite)
    bar = suite.bar(len(stages_list) + 2 + len(HOST_STAGES), "stages")
    stages, counts = [], {}
    for stage, spec, label in stages_list:
        bar.set_postfix_str(stage)
        feed = suite.feeds[stage]
        fns = {n: (lambda r=v.runners[spec.name], f=feed: r.run(f)) for n, v in suite.variants.items()}
        probes = {n: EngineClock({spec.name: v.runners[spec.name]}).take for n, v in suite.variants.items()
                  if spec.name in v.runners}
        timed = suite.time_stage(stage, fns, probes=probes)
        counts[stage] = suite.count(spec.name, feed)
        stages.append(suite.stage_entry(timed, group="graph", graph=spec.name, label=label,
                                        shapes=input_shapes(spec, feed), count=counts[stage]))
        bar.update(1)
    stages += composite_stages(suite, bar, sum_counts([counts[s.name] for s in TRACKED_STEP_GRAPHS]))
    host, sink = host_stages(suite)
    for stage, label, fns in host:
        bar.set_postfix_str(stage)
        stages.append(suite.stage_entry(suite.time_stage(stage, fns), group="host", label=label))
        bar.update(1)
    sink.close()
    bar.close()
    suite.result["stages"] = stages
    suite.memory("tiny stages")


def composite_stages(suite: Suite, bar, step_count: dict | None) -> list[dict]:
    """The per-frame tracking step and the frame path, on trackers past their prompted frame."""
    from tpo.runtime import preprocess

    mk = suite.manifest.preprocess.mask
    pix = [preprocess.mask_frame(f, mk.image_size, mk.mean, mk.std) for f in suite.frames[:60]]
    step_fns, path_fns, step_probes, path_probes = {}, {}, {}, {}
    for n, v in suite.variants.items():
        trackers = primed_tracker(suite, v, suite.captured.track_prompt, pix)
        step_fns[n], path_fns[n] = trackers["step"], trackers["path"]
        step_probes[n] = EngineClock(dict(v.runners)).take
        path_probes[n] = EngineClock(dict(v.runners)).take
    out = []
    for stage, fns, probes, label in (
            ("track_step", step_fns, step_probes, "per-frame tracking step (4 graphs + host memory bank)"),
            ("frame_path", path_fns, path_probes, "frame path 320x240: preprocess + step + postprocess")):
        bar.set_postfix_str(stage)
        timed = suite.time_stage(stage, fns, probes=probes)
        out.append(suite.stage_entry(timed, group="composite", label=label, count=step_count))
        bar.update(1)
    return out


def host_stages(suite: Suite) -> tuple[list[tuple[str, str, dict]], object]:
    """(stage, label, {variant: fn}) of the host stages (`HOST_STAGES`): the runtime's numpy code, and PyTorch's
    own where the model side has one (the eager baseline's preprocessing and postprocessing); and the JSONL
    sink the last one writes to (close it after)."""
    from tpo.runtime import postprocess, preprocess

    frames, mp, mk = suite.frames[:60], suite.manifest.preprocess.mllm, suite.manifest.preprocess.mask
    clip_idx = preprocess.middle_frame_indices(mp.num_frames, len(frames))
    logits = suite.captured.mask_logits[0, 0]
    pre_clip = {HOST: lambda: preprocess.mllm_pixels(frames[clip_idx], mp.image_size, mp.mean, mp.std)}
    pre_frame = {HOST: lambda: preprocess.mask_frame(frames[7], mk.image_size, mk.mean, mk.std)}
    post = {HOST: lambda: postprocess.mask_and_box(logits, 240, 320)}
    if BASELINE in suite.variants:
        _add_torch_host(suite, frames[clip_idx], frames[7:8], pre_clip, pre_frame, post)
    write, sink = _sink_writer(suite)
    return [("capture", "capture: decode 320x240 MJPG (OpenCV) + BGR->RGB",
             {"runtime-opencv": cycling_capture(suite.video)}),
            ("preprocess_clip", f"preprocess: clip of {mp.num_frames} frames for the vision encoder", pre_clip),
            ("preprocess_frame", "preprocess: one frame for the mask encoder", pre_frame),
            ("postprocess", "postprocess: mask logits -> mask + box at 320x240", post),
            ("sink", "sink: JSONL track event (mask RLE + write + flush)", {"runtime-jsonl": write})], sink


def _add_torch_host(suite: Suite, clip: np.ndarray, frame: np.ndarray, pre_clip: dict, pre_frame: dict,
                    post: dict) -> None:
    import torch

    from tpo.model import mask_tracker as mt
    from tpo.model import preprocess as tpre

    mp, mk = suite.manifest.preprocess.mllm, suite.manifest.preprocess.mask
    pre_clip[BASELINE] = lambda: tpre.mllm_pixels(clip, mp.image_size, mp.mean, mp.std)
    pre_frame[BASELINE] = lambda: tpre.mask_pixels(frame, mk.image_size, mk.mean, mk.std)
    tl = torch.from_numpy(np.ascontiguousarray(suite.captured.mask_logits[:1]))
    post[BASELINE] = lambda: mt.boxes_from_masks(mt.upsample_mask_logits(tl, (240, 320)) > 0)


def _sink_writer(suite: Suite):
    """(a fn writing one JSONL track event per call: mask RLE + write + flush, the sink under the work folder)."""
    from tpo.runtime import postprocess
    from tpo.runtime.rle import rle_encode
    from tpo.runtime.sinks import JsonlSink

    sink = JsonlSink(suite.work / "sink.jsonl")
    mask, box = postprocess.mask_and_box(suite.captured.mask_logits[0, 0], 240, 320)
    counter = {"i": 0}

    def write():
        counter["i"] += 1
        sink.write_event({"type": "track", "frame": counter["i"], "time_s": counter["i"] / 30.0, "box": box,
                          "score": 1.0, "mask_rle": rle_encode(mask)})

    return write, sink


# ------------------------------------------------------------------------------------------ camera sizes
def run_preprocess_sizes(suite: Suite) -> None:
    """Both branches' preprocessing per frame size next to the tracking step (see preprocessing.py)."""
    from tpo.runtime import preprocess

    from .preprocessing import measure, size_name

    vs = suite.variants
    name = next((n for n, v in vs.items() if v.backend == "onnxruntime" and v.precision == Precision.FP32),
                next(iter(vs)))
    v = vs[name]
    path = v.session.frame_path
    pix = [path.mask_frame(f) for f in suite.frames[:12]]
    step = primed_tracker(suite, v, suite.captured.track_prompt, pix)["step"]
    clip = suite.frames[preprocess.middle_frame_indices(suite.manifest.preprocess.mllm.num_frames,
                                                        len(suite.frames))]
    frames = {size_name(w, h): resized(clip, (w, h)) for w, h in suite.plan.preprocess_sizes}
    bar = suite.bar(len(frames), "preprocessing sizes")

    def timer(stage, fns):
        bar.set_postfix_str(stage)
        timed = suite.time_stage(stage, fns)
        bar.update(1)
        return timed

    suite.result["preprocess_sizes"] = measure(frames, path, step, suite.captured.mask_logits[0, 0], timer, name,
                                               suite.manifest.preprocess)
    bar.close()
    suite.memory("preprocessing sizes")


def primed_tracker(suite: Suite, v: Variant, prompt: np.ndarray, pix: list[np.ndarray], frames=None) -> dict:
    """A tracker past its prompted frame (every later step has the same static shapes, so its cost does
    not depend on how full the memory bank is): {"step": one tracking step, "path": one whole frame}."""
    s = v.session
    k = 1
    tracker = s.tracker(prompt)
    for p in pix[: k + 1]:
        tracker.step(p)
    frames = suite.frames[:60] if frames is None else frames
    i = {"n": k + 1}

    def step():
        i["n"] += 1
        return tracker.step(pix[i["n"] % len(pix)])

    ptracker = s.tracker(prompt)
    for f in frames[: k + 1]:
        s.track_frame(ptracker, f)
    j = {"n": k + 1}

    def path():
        j["n"] += 1
        return s.track_frame(ptracker, frames[j["n"] % len(frames)])

    return {"step": step, "path": path}
