"""The bench's inputs: its synthetic clip (written as a video file) and the graph feeds recorded from a real
run of the runtime, so that every stage is timed on the inputs the pipeline really gives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpo import manifest as names
from tpo.errors import TPOError


def make_clip(folder: Path, seconds: float = 4.0, fps: float = 30.0, seed: int = 4242):
    """A synthetic 320x240 scene at `fps` (the training distribution, so the tiny model answers sensibly),
    written as MJPG AVI and as mp4v MP4 at each resolution asked later. Returns (frames RGB, queries)."""
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
    def __init__(self, runner):
        self.runner, self.feeds = runner, []
        self.name = getattr(runner, "name", "?")

    def run(self, inputs):
        self.feeds.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        return self.runner.run(inputs)


def llm_feed(llm_cfg: dict, embeds: np.ndarray, past: dict | None) -> dict[str, np.ndarray]:
    """The LLM graph's inputs as `Session.llm` builds them."""
    n_layers, kv, hd = llm_cfg["num_layers"], llm_cfg["num_kv_heads"], llm_cfg["head_dim"]
    if past is None:
        past = {n: np.zeros((1, kv, 0, hd), np.float32) for n in names.past_names(n_layers)}
    past_len = next(iter(past.values())).shape[2]
    s = embeds.shape[1]
    return {"inputs_embeds": embeds.astype(np.float32), "attention_mask": np.ones((1, past_len + s), np.int64),
            "position_ids": np.arange(past_len, past_len + s, dtype=np.int64)[None], **past}


def present_as_past(out: dict, n_layers: int) -> dict:
    return {p: out[q] for p, q in zip(names.past_names(n_layers), names.present_names(n_layers))}


def collect_feeds(s, frames: np.ndarray, fps: float, queries: dict[str, str]) -> tuple[dict, dict]:
    """Inputs of every graph as the runtime makes them for this clip (track question for the slow path,
    temporal question for the temporal head, a tracked stretch of frames for the mask pieces)."""
    from tpo.runtime import preprocess

    mp, llm_cfg = s.pre["mllm"], s.llm_cfg
    feeds: dict[str, dict] = {}
    t = mp["num_frames"]
    idx = preprocess.middle_frame_indices(t, frames.shape[0])
    pixels = preprocess.mllm_pixels(frames[idx], mp["image_size"], mp["mean"], mp["std"])
    feeds[names.VISION_ENCODER] = {"pixels": pixels}
    feeds[names.VISION_ENCODER_IMAGE] = {"pixels": np.ascontiguousarray(pixels[:, :, t // 2: t // 2 + 1])}
    tokens = s.runners[names.VISION_ENCODER].run(feeds[names.VISION_ENCODER])["vision_tokens"]
    feeds[names.CONNECTOR] = {"vision_tokens": tokens}
    visual = s.runners[names.CONNECTOR].run(feeds[names.CONNECTOR])["visual_embeds"]
    prompt = s.text.prompt(queries["track"], "video")
    embeds = s.embed_tokens(prompt.input_ids)
    embeds[prompt.visual_mask] = visual[0]
    feeds["llm_prefill"] = llm_feed(llm_cfg, embeds[None], None)
    out = s.runners[names.LLM].run(feeds["llm_prefill"])
    token = int(np.argmax(out["logits"][0, -1]))
    feeds["llm_decode"] = llm_feed(llm_cfg, s.embed_tokens([token])[None],
                                   present_as_past(out, llm_cfg["num_layers"]))
    h = out["hidden_states"][0, -1].astype(np.float32)
    feeds[names.TASK_ROUTER] = {"hidden": h[None]}
    prompts = s.runners[names.TASK_ROUTER].run(feeds[names.TASK_ROUTER])
    feeds[names.BOX_ENCODER] = {"boxes": np.array([[0.1, 0.2, 0.5, 0.6]], np.float32)}
    # the temporal head, as Session.temporal feeds it
    tp = s.pre["temporal"]
    clips = preprocess.clip_frame_indices(frames.shape[0], fps, tp["clip_s"], tp["frames_per_clip"])
    cpix = np.concatenate([preprocess.mllm_pixels(frames[i], mp["image_size"], mp["mean"], mp["std"]) for i in clips])
    feats = s.vision_tokens(cpix).mean(axis=1)
    video = np.concatenate([feats, preprocess.tef(len(clips))], axis=1)[None].astype(np.float32)
    text = s.embed_tokens(s.text.question_ids(queries["temporal"], tp["max_text_tokens"]))[None]
    feeds[names.TEMPORAL_HEAD] = {"text_feats": text, "text_mask": np.ones(text.shape[:2], bool),
                                  "video_feats": video, "video_mask": np.ones(video.shape[:2], bool),
                                  "prompt_token": prompts["temporal_prompt"].astype(np.float32)}
    # the mask pieces: record a tracked stretch long enough to fill the memory ring
    saved = {n: s.runners[n] for n in names.FAST_PATH}
    rec = {n: Recorder(r) for n, r in saved.items()}
    s.runners.update(rec)
    try:
        tracker = s.tracker(prompts["track_prompt"])
        for f in frames[: s.tracker_cfg["num_maskmem"] + 2]:
            s.track_frame(tracker, f)
    finally:
        s.runners.update(saved)
    feeds[names.MASK_IMAGE_ENCODER] = rec[names.MASK_IMAGE_ENCODER].feeds[-1]
    feeds[names.MASK_DECODER_PROMPTED] = rec[names.MASK_DECODER_PROMPTED].feeds[0]
    feeds[names.MEMORY_ATTENTION] = rec[names.MEMORY_ATTENTION].feeds[-1]
    feeds[names.MASK_DECODER_TRACKED] = rec[names.MASK_DECODER_TRACKED].feeds[-1]
    feeds[names.MEMORY_ENCODER] = rec[names.MEMORY_ENCODER].feeds[-1]
    ctx = {"track_prompt": prompts["track_prompt"].astype(np.float32), "prompt_tokens": int(len(prompt.input_ids)),
           "hidden": h}
    return feeds, ctx


def example_feed(defn, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of a `GraphDef` at `sizes` (named dims), values in each tensor's domain (random weights side)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in defn.inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in t.shape]
        if t.name == "attention_mask":
            out[t.name] = np.ones(shape, np.int64)
        elif t.name == "position_ids":
            past = sizes.get("past_sequence", 0)
            out[t.name] = np.broadcast_to(np.arange(past, past + shape[1]), shape).astype(np.int64).copy()
        elif t.name == "memory_time":
            out[t.name] = np.broadcast_to(np.arange(shape[1]), shape).astype(np.int64).copy()
        elif t.dtype == "bool" and not shape:
            out[t.name] = np.array(False)
        elif t.dtype == "bool":
            out[t.name] = np.ones(shape, bool)
        elif t.name == "boxes":
            out[t.name] = np.tile(np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), (shape[0], 1))
        else:
            out[t.name] = rng.standard_normal(shape).astype(np.float32)
    return out
