"""Part 4 of a run, scaling on the tiny model: one stage per point of each axis, side by side per variant.

Axes: the vision encoder per batch at 1 and T frames (and frames per clip at batch 1), the frame path per frame
resolution (and the capture alone), the tracking step per number of tracked objects, the LLM prefill per prompt
length; then the goal stages at one thread per engine (`run_threads`; the main table runs at --threads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tpo.contract import graphs as G

from .backends import EngineClock, quiet_onnxruntime
from .inputs import cycling_capture, llm_feed, resized, write_video
from .measure import torch_threads, tracker_on
from .stages import CountingRunner
from .tiny_stages import primed_tracker

if TYPE_CHECKING:
    from .suite import Suite


class Axes:
    """The scaling section being filled: `point(axis, x, stage, fns)` times one point of an axis."""

    def __init__(self, suite: Suite, total: int):
        self.suite, self.sections = suite, {}
        self.bar = suite.bar(total, "scaling")

    def point(self, axis: str, x, stage: str, fns: dict, count: dict | None = None) -> None:
        self.bar.set_postfix_str(stage)
        timed = self.suite.time_stage(stage, fns)
        entry = self.suite.stage_entry(timed, group="scaling", **({} if count is None else {"count": count}))
        section = self.sections.setdefault(axis, {"x": [], "stages": []})
        section["x"].append(x)
        section["stages"].append(entry)
        self.bar.update(1)


def _mask_pixels(suite: Suite, frames: np.ndarray) -> list[np.ndarray]:
    from tpo.runtime import preprocess

    mk = suite.manifest.preprocess.mask
    return [preprocess.mask_frame(f, mk.image_size, mk.mean, mk.std) for f in frames]


def run_scaling(suite: Suite) -> None:
    p = suite.plan
    batches = [b for b in p.batches if b <= suite.manifest.dims["batch"].max]
    axes = Axes(suite, len(batches) * 2 + len(p.resolutions) * 2 + len(p.objects) + len(p.prompt_lengths))
    vision_batches(suite, axes, batches)
    resolutions(suite, axes)
    tracked_objects(suite, axes)
    prompt_lengths(suite, axes)
    axes.bar.close()
    suite.result["scaling"] = axes.sections
    suite.memory("scaling")


def vision_batches(suite: Suite, axes: Axes, batches: list[int]) -> None:
    t = suite.manifest.preprocess.mllm.num_frames
    for spec, frames_n in ((G.VISION_ENCODER_IMAGE, 1), (G.VISION_ENCODER, t)):
        (pixels,) = suite.feeds[spec.name].values()          # the graph's one input
        for b in batches:
            feed = spec.feed(pixels=np.ascontiguousarray(np.repeat(pixels, b, axis=0)))
            fns = {n: (lambda r=v.runners[spec.name], f=feed: r.run(f)) for n, v in suite.variants.items()}
            axes.point(f"vision encoder batch (T={frames_n})", b, f"{G.VISION_ENCODER.name}[T={frames_n},b={b}]", fns,
                       count=suite.count(spec.name, feed))
    axes.sections["frames per clip (batch 1)"] = {
        "x": [1, t], "stages": [axes.sections[f"vision encoder batch (T={n})"]["stages"][0] for n in (1, t)]}


def resolutions(suite: Suite, axes: Axes) -> None:
    """Per frame size: the capture alone, and capture + preprocess + step + postprocess (the frame path)."""
    p = suite.plan
    for w, h in p.resolutions:
        frames = resized(suite.frames[:24], (w, h))
        video = write_video(suite.work / f"clip_{w}x{h}.avi", frames, p.source_fps)
        axes.point("capture resolution", f"{w}x{h}", f"capture[{w}x{h}]", {"runtime-opencv": cycling_capture(video)})
        pix = _mask_pixels(suite, frames[:8])
        fns = {n: primed_tracker(suite, v, suite.captured.track_prompt, pix, frames)["path"]
               for n, v in suite.variants.items()}
        axes.point("frame path resolution", f"{w}x{h}", f"frame_path[{w}x{h}]", fns)


def tracked_objects(suite: Suite, axes: Axes) -> None:
    """The tracking step with more objects: copies of the question's prompt, each a little perturbed."""
    pix = _mask_pixels(suite, suite.frames[:12])
    prompt = suite.captured.track_prompt
    for o in suite.plan.objects:
        rng = np.random.default_rng(o)
        prompts = np.concatenate([prompt] + [prompt + 0.05 * rng.standard_normal(prompt.shape).astype(np.float32)
                                             for _ in range(o - 1)])
        fns = {n: primed_tracker(suite, v, prompts, pix)["step"] for n, v in suite.variants.items()}
        axes.point("tracked objects", o, f"track_step[objects={o}]", fns)


def prompt_lengths(suite: Suite, axes: Axes) -> None:
    """The LLM prefill on prompts of random tokens of each length the artifacts allow."""
    ref = next(iter(suite.variants.values())).session
    llm = suite.manifest.llm
    rng = np.random.default_rng(0)
    for length in [x for x in suite.plan.prompt_lengths if x <= llm.max_prompt_tokens]:
        ids = rng.integers(3, ref.token_table.shape[0], size=length)
        feed = llm_feed(llm, ref.embed_tokens(ids)[None], None)
        fns = {n: (lambda r=v.runners[G.LLM.name], f=feed: r.run(f)) for n, v in suite.variants.items()}
        axes.point("prompt length (prefill)", length, f"llm_prefill[{length}]", fns,
                   count=suite.count(G.LLM.name, feed))


# ------------------------------------------------------------------------------------------ threads
def run_threads(suite: Suite) -> None:
    """The goal stages at 1 thread per engine too (the main table runs at --threads)."""
    p = suite.plan
    if p.threads == 1:
        return
    main = {e["stage"]: e for e in suite.result.get("stages", [])}
    bar = suite.bar(2, "threads=1")
    with torch_threads(1):
        runners = one_thread_runners(suite, (G.VISION_ENCODER, *G.FAST_PATH))
        vision = G.VISION_ENCODER.name
        feed = suite.feeds[vision]
        fns = {n: (lambda r=r[vision]: r.run(feed)) for n, r in runners.items()}
        probes = {n: EngineClock({vision: r[vision]}).take for n, r in runners.items()}
        bar.set_postfix_str(vision)
        timed = suite.time_stage(f"{vision}[threads=1]", fns, probes=probes)
        e1 = suite.stage_entry(timed, group="scaling", graph=vision, count=main.get(vision, {}).get("count"))
        bar.update(1)
        bar.set_postfix_str("track_step")
        timed = _one_thread_step(suite, runners)
        e2 = suite.stage_entry(timed, group="scaling", count=main.get("track_step", {}).get("count"))
        bar.update(1)
    bar.close()
    for e in (e1, e2):
        e["threads"] = 1
    stages = [e1, main.get(vision), e2, main.get("track_step")]
    x = [f"{vision} 1", f"{vision} {p.threads}", "track_step 1", f"track_step {p.threads}"]
    kept = [(xi, e) for xi, e in zip(x, stages, strict=True) if e is not None]
    suite.result.setdefault("scaling", {})["threads per engine"] = {"x": [xi for xi, _ in kept],
                                                                    "stages": [e for _, e in kept]}
    suite.memory("threads")


def one_thread_runners(suite: Suite, specs) -> dict[str, dict[str, CountingRunner]]:
    """Per variant (eager and ONNX Runtime), runners of `specs` at one intra-op thread: the eager modules as
    they are (torch's threads are process-wide, set by the caller), new ONNX Runtime sessions."""
    p = suite.plan
    runners: dict[str, dict] = {}
    for n, v in suite.variants.items():
        if v.backend == "torch":
            runners[n] = {s.name: CountingRunner(v.runners[s.name].runner) for s in specs}
        elif v.backend == "onnxruntime":
            be = quiet_onnxruntime(p.onnx_providers, threads=1)
            runners[n] = {s.name: CountingRunner(be.load(v.manifest.graph(s.name))) for s in specs}
    return runners


def _one_thread_step(suite: Suite, runners: dict):
    pix = _mask_pixels(suite, suite.frames[:12])
    fns, probes = {}, {}
    for n, r in runners.items():
        fast = {s.name: r[s.name] for s in G.FAST_PATH}
        tracker = tracker_on(fast, suite.manifest.tracker, suite.captured.track_prompt)
        for x in pix[:2]:
            tracker.step(x)
        fns[n] = (lambda t=tracker: t.step(pix[3]))
        probes[n] = EngineClock(fast).take
    return suite.time_stage("track_step[threads=1]", fns, probes=probes)
