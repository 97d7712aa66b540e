"""The bench's inputs: its synthetic clip (written as a video file) and the graph feeds recorded from a real
run of the runtime, so that every stage is timed on the inputs the pipeline really gives it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpo.contract import LLM, Manifest
from tpo.contract import graphs as G
from tpo.contract import tasks as T
from tpo.errors import TPOError

from .plan import LLM_STAGES

PREFILL, DECODE = LLM_STAGES


def make_clip(seconds: float = 4.0, fps: float = 30.0, seed: int = 4242) -> tuple[np.ndarray, dict[str, str]]:
    """A synthetic 320x240 scene at `fps` (the training distribution, so the tiny model answers sensibly):
    (frames [N, 240, 320, 3] uint8 RGB, the first question of each kind the generator asks about it); the
    caller writes it as a video (`write_video`) at each resolution it needs."""
    from tpo.data.synthetic import SceneConfig
    from tpo.data.synthetic import make_clip as synth

    cfg = SceneConfig(fps_range=(int(fps), int(fps)), duration_range_s=(seconds, seconds))
    clip = synth(0, seed, cfg)
    queries = {}
    for q in clip.queries:
        queries.setdefault(q.task, q.question)
    return clip.frames, queries


def write_video(path: Path, frames_rgb: np.ndarray, fps: float, size: tuple[int, int] | None = None) -> Path:
    import cv2

    fourcc = {".avi": "MJPG", ".mp4": "mp4v"}[path.suffix]
    w, h = size or (frames_rgb.shape[2], frames_rgb.shape[1])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise TPOError(f"{path}: OpenCV cannot write {fourcc} video here")
    for f in frames_rgb:
        bgr = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
        if (w, h) != (f.shape[1], f.shape[0]):
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        writer.write(bgr)
    writer.release()
    return path


def resized(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])


# ------------------------------------------------------------------------------------------ feeds
class Recorder:
    """Wraps a graph runner and keeps a copy of every feed it runs, and its outputs."""

    def __init__(self, runner):
        self.runner, self.feeds, self.outputs = runner, [], []
        self.name = getattr(runner, "name", "?")

    def run(self, inputs):
        self.feeds.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        out = self.runner.run(inputs)
        self.outputs.append(out)
        return out


@dataclass
class Captured:
    """What the recorded run gives the later parts besides the feeds: the router's track prompt for the
    question (the tracker's prompt everywhere), the prompt's length in tokens, and the last tracked frame's
    low-resolution mask logits [objects, 1, s, s] (what postprocessing turns into a mask and a box)."""

    track_prompt: np.ndarray
    prompt_tokens: int
    mask_logits: np.ndarray


def llm_feed(llm: LLM, embeds: np.ndarray, past: dict | None) -> dict[str, np.ndarray]:
    """The LLM graph's inputs as `Session.llm` builds them (an empty past when `past` is None)."""
    if past is None:
        past = {n: np.zeros((1, llm.num_kv_heads, 0, llm.head_dim), np.float32) for n in llm.past_names()}
    past_len = next(iter(past.values())).shape[2]
    s = embeds.shape[1]
    return G.LLM.feed(past, inputs_embeds=embeds.astype(np.float32),
                      attention_mask=np.ones((1, past_len + s), np.int64),
                      position_ids=np.arange(past_len, past_len + s, dtype=np.int64)[None])


def _run(s, spec: G.GraphSpec, feed: dict):
    return spec.outputs_of(s.runners[spec.name].run(feed))


def collect_feeds(s, manifest: Manifest, frames: np.ndarray, fps: float, queries: dict[str, str]
                  ) -> tuple[dict[str, dict], Captured]:
    """Inputs of every graph as the runtime makes them for this clip (track question for the slow path,
    temporal question for the temporal head, a tracked stretch of frames for the mask pieces), by graph name
    (the LLM's by stage: `LLM_STAGES`)."""
    feeds, prompts, n_tokens = _slow_path_feeds(s, manifest, frames, queries[T.TRACK.name])
    feeds[G.TEMPORAL_HEAD.name] = _temporal_feed(s, manifest, frames, fps, queries[T.TEMPORAL.name],
                                                 prompts.temporal_prompt)
    mask_feeds, logits = _mask_feeds(s, frames[: manifest.tracker.num_maskmem + 2], prompts.track_prompt)
    feeds.update(mask_feeds)
    return feeds, Captured(prompts.track_prompt.astype(np.float32), n_tokens, logits)


def _slow_path_feeds(s, manifest: Manifest, frames: np.ndarray, question: str):
    """Vision encoders, connector, LLM prefill and one decode step, router and box encoder on `question`."""
    from tpo.runtime import preprocess

    mp, feeds = manifest.preprocess.mllm, {}
    t = mp.num_frames
    idx = preprocess.middle_frame_indices(t, frames.shape[0])
    pixels = preprocess.mllm_pixels(frames[idx], mp.image_size, mp.mean, mp.std)
    feeds[G.VISION_ENCODER.name] = G.VISION_ENCODER.feed(pixels=pixels)
    feeds[G.VISION_ENCODER_IMAGE.name] = G.VISION_ENCODER_IMAGE.feed(
        pixels=np.ascontiguousarray(pixels[:, :, t // 2: t // 2 + 1]))
    tokens = _run(s, G.VISION_ENCODER, feeds[G.VISION_ENCODER.name]).vision_tokens
    feeds[G.CONNECTOR.name] = G.CONNECTOR.feed(vision_tokens=tokens)
    visual = _run(s, G.CONNECTOR, feeds[G.CONNECTOR.name]).visual_embeds
    prompt = s.text.prompt(question, "video")
    embeds = s.embed_tokens(prompt.input_ids)
    embeds[prompt.visual_mask] = visual[0]
    feeds[PREFILL] = llm_feed(manifest.llm, embeds[None], None)
    out = _run(s, G.LLM, feeds[PREFILL])
    token = int(np.argmax(out.logits[0, -1]))
    feeds[DECODE] = llm_feed(manifest.llm, s.embed_tokens([token])[None], out.present)
    feeds[G.TASK_ROUTER.name] = G.TASK_ROUTER.feed(hidden=out.hidden_states[0, -1:].astype(np.float32))
    prompts = _run(s, G.TASK_ROUTER, feeds[G.TASK_ROUTER.name])
    feeds[G.BOX_ENCODER.name] = G.BOX_ENCODER.feed(boxes=np.array([[0.1, 0.2, 0.5, 0.6]], np.float32))
    return feeds, prompts, int(len(prompt.input_ids))


def _temporal_feed(s, manifest: Manifest, frames: np.ndarray, fps: float, question: str,
                   prompt_token: np.ndarray) -> dict:
    """The temporal head's inputs over the clip, as the runtime's temporal task feeds it."""
    from tpo.runtime import preprocess

    mp, tp = manifest.preprocess.mllm, manifest.preprocess.temporal
    clips = preprocess.clip_frame_indices(frames.shape[0], fps, tp.clip_s, tp.frames_per_clip)
    cpix = np.concatenate([preprocess.mllm_pixels(frames[i], mp.image_size, mp.mean, mp.std) for i in clips])
    feats = s.vision_tokens(cpix).mean(axis=1)
    video = np.concatenate([feats, preprocess.tef(len(clips))], axis=1)[None].astype(np.float32)
    text = s.embed_tokens(s.text.question_ids(question, tp.max_text_tokens))[None]
    return G.TEMPORAL_HEAD.feed(text_feats=text, text_mask=np.ones(text.shape[:2], bool), video_feats=video,
                                video_mask=np.ones(video.shape[:2], bool),
                                prompt_token=prompt_token.astype(np.float32))


def _mask_feeds(s, frames: np.ndarray, track_prompt: np.ndarray) -> tuple[dict[str, dict], np.ndarray]:
    """The mask pieces' inputs, recorded while the session tracks `frames` (long enough to fill the memory
    ring): the prompted decoder's from the first frame, the others' from the last; and the last frame's
    mask logits."""
    saved = {spec.name: s.runners[spec.name] for spec in G.FAST_PATH}
    rec = {n: Recorder(r) for n, r in saved.items()}
    s.runners.update(rec)
    try:
        tracker = s.tracker(track_prompt)
        for f in frames:
            s.track_frame(tracker, f)
    finally:
        s.runners.update(saved)
    feeds = {n: (r.feeds[0] if n == G.MASK_DECODER_PROMPTED.name else r.feeds[-1]) for n, r in rec.items()}
    tracked = rec[G.MASK_DECODER_TRACKED.name].outputs[-1]
    return feeds, G.MASK_DECODER_TRACKED.outputs_of(tracked).mask_logits


def cycling_capture(video: Path):
    """A zero-argument capture of `video`'s next frame through the runtime's source, reopened at the end."""
    from tpo.runtime.sources import open_source

    holder = {"it": None}

    def capture():
        if holder["it"] is None:
            holder["it"] = open_source(str(video))
        try:
            return next(holder["it"])
        except StopIteration:
            holder["it"] = open_source(str(video))
            return next(holder["it"])

    return capture


def example_feed(defn, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of a `GraphDef` at `sizes` (named dims), values in each tensor's declared domain, as a tracked
    frame in its steady state sees them (every slot valid, not a conditioning frame; random weights side)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in defn.inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in t.shape]
        if t.domain == "ones":
            out[t.name] = np.ones(shape, np.int64)
        elif t.domain == "positions":
            past = sizes.get("past_sequence", 0)
            out[t.name] = np.broadcast_to(np.arange(past, past + shape[-1]), shape).astype(np.int64).copy()
        elif t.domain == "slot_times":
            out[t.name] = np.broadcast_to(np.arange(shape[-1]), shape).astype(np.int64).copy()
        elif t.domain == "flag":
            out[t.name] = np.array(False)
        elif t.domain == "valid":
            out[t.name] = np.ones(shape, bool)
        elif t.domain == "box_corners":
            out[t.name] = np.tile(np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), (shape[0], 1))
        else:
            out[t.name] = rng.standard_normal(shape).astype(np.float32)
    return out
