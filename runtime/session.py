"""A runtime session: the exported graphs of one artifacts folder on one backend, answering questions.

    session = tpo.runtime.open("artifacts/", backend="onnxruntime")
    answer = session.ask("track the red circle", frames, fps=30.0)   # frames [N, H, W, 3] uint8 RGB
    for result in session.stream("clip.mp4", "track the red circle"): ...   # runtime.stream

A session holds what streams share and never change: the loaded graphs, the token and task-embedding
tables, the tokenizer. What belongs to one use of it (the latency timings, the frame path with its device
buffers) lives in a view: `session.for_stream()` returns a shallow copy with its own `Timings` and frame
path, so one session serves several streams at once, from several threads.

Two paths, kept apart:
- the slow path, once per question (`ask`): sample and preprocess frames, vision encoder, connector, the splice
  of visual tokens and task embeddings into the prompt, LLM prefill and greedy decoding with the KV cache, and
  on each trigger one more step whose final-norm hidden state goes through the task router to the head;
- the fast path, per frame (`MaskTracker.step`, in `tracker.py`): tracking with a fixed-size memory bank.
Decoding follows `tpo.model.generate` exactly (training trigger order: the step feeds [trigger, task
embedding]); tests/runtime pin the agreement with the PyTorch pipeline.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo import manifest as names
from tpo.errors import InputError
from tpo.manifest import Manifest

from . import postprocess, preprocess
from .backend import Backend, open_backend
from .frame_path import FramePath, select_frame_path
from .text import TextCodec
from .timings import Timings
from .tracker import MaskTracker


@dataclass
class Answer:
    text: str
    raw_text: str
    task: str                                   # first triggered task or "none"
    token_ids: list[int]
    region: list[dict] = field(default_factory=list)     # {"frame", "box" (px), "box_normalised"}
    temporal: list[dict] = field(default_factory=list)   # {"windows", "saliency", "clip_len_s"}
    track: list[dict] = field(default_factory=list)      # per object: {"masks" [T,H,W], "boxes", "scores"}
    prompts: dict[str, np.ndarray] = field(default_factory=dict)   # task -> router input hidden [H]
    # task -> probability the LLM gave the trigger token when it chose it (softmax over the vocabulary)
    trigger_probability: dict[str, float] = field(default_factory=dict)


class Session:
    def __init__(self, manifest: Manifest, backend: Backend, frame_path: FramePath | None = None):
        from safetensors.numpy import load_file

        self.manifest = manifest
        self.backend = backend
        self.timings = Timings()
        m = manifest.data
        self.pre, self.llm_cfg, self.tracker_cfg = m["preprocess"], m["llm"], m["tracker"]
        self.dims = m["dims"]
        self.frame_path = frame_path or select_frame_path(self.pre)   # GPU kernels when a GPU can run them
        self.runners = {}
        for name in m["graphs"]:
            self.runners[name] = backend.load(manifest.graph(name))
        emb = load_file(str(manifest.file(names.EMBEDDINGS)))
        self.token_table = emb[names.TOKEN_TABLE]
        self.task_embeddings = {t: emb[names.TASK_EMBEDDING.format(task=t)].astype(np.float32) for t in names.TASKS}
        self.text = TextCodec(manifest.file(names.TOKENIZER), m["tokens"], self.llm_cfg["num_visual_tokens"],
                              self.llm_cfg["max_prompt_tokens"])
        self.vision_graphs = {int(k): v for k, v in m["vision"]["graphs_by_frames"].items()}

    def for_stream(self, frame_path: FramePath | None = None) -> Session:
        """A view of this session for one stream: the same graphs and tables, its own timings and frame
        path (device buffers are per stream). Graph runners are shared; ONNX Runtime's run is thread-safe."""
        view = copy.copy(self)
        view.timings = Timings()
        if frame_path is not None:
            view.frame_path = frame_path
        elif self.frame_path.kind != "cpu":     # the CPU path keeps no state; kernel paths hold buffers
            view.frame_path = select_frame_path(self.pre)
        return view

    def stream(self, source, question: str, **options):
        """A `runtime.stream.Stream` of `question` over `source` (anything `open_source` takes, or a Source);
        options: `runtime.tasks.StreamOptions` fields (conf, with_masks, question_frames, ...)."""
        from .sources import Source, open_source
        from .stream import stream

        return stream(self, source if isinstance(source, Source) else open_source(source), question, **options)

    # ---------------------------------------------------------------------------------- pieces
    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.timings.timed(graph):
            return self.runners[graph].run(inputs)

    def embed_tokens(self, ids) -> np.ndarray:
        return self.token_table[np.asarray(ids, dtype=np.int64)].astype(np.float32)

    def vision_tokens(self, pixels: np.ndarray) -> np.ndarray:
        """pixels [B, 3, T, S, S] -> normalised vision tokens, in batches the graph's profile allows."""
        graph = self.vision_graphs.get(pixels.shape[2])
        if graph is None:
            raise InputError(f"no vision graph for {pixels.shape[2]} frames (have {sorted(self.vision_graphs)})")
        step = self.dims["batch"]["max"]
        parts = [self.run(graph, {"pixels": pixels[i: i + step]})["vision_tokens"] for i in range(0, len(pixels), step)]
        return np.concatenate(parts)

    def llm(self, embeds: np.ndarray, past: dict[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, dict]:
        """embeds [1, s, H] + past -> (logits [1, s, V], hidden [1, s, H], present as the next past)."""
        n_layers, kv, hd = self.llm_cfg["num_layers"], self.llm_cfg["num_kv_heads"], self.llm_cfg["head_dim"]
        if past is None:
            past = {n: np.zeros((1, kv, 0, hd), np.float32) for n in names.past_names(n_layers)}
        past_len = next(iter(past.values())).shape[2]
        s = embeds.shape[1]
        out = self.run(names.LLM, {
            "inputs_embeds": embeds.astype(np.float32),
            "attention_mask": np.ones((1, past_len + s), np.int64),
            "position_ids": np.arange(past_len, past_len + s, dtype=np.int64)[None], **past})
        present = {p: out[q] for p, q in zip(names.past_names(n_layers), names.present_names(n_layers))}
        return out["logits"], out["hidden_states"], present

    # ---------------------------------------------------------------------------------- slow path
    def ask(self, question: str, frames: np.ndarray, fps: float, boxes: np.ndarray | None = None,
            max_new_tokens: int = 32, run_heads: bool = True) -> Answer:
        """Answer `question` about `frames` ([N, H, W, 3] uint8 RGB; one frame = an image) and run each
        triggered head. boxes [K, 4] normalised x1,y1,x2,y2, one per `<track_box>` in the question."""
        frames = check_frames(frames)
        if not fps > 0:
            raise InputError(f"fps must be > 0, got {fps}")
        mp = self.pre["mllm"]
        media = "image" if frames.shape[0] == 1 else "video"
        prompt = self.text.prompt(question, media)
        with self.timings.timed("preprocess"):
            t = 1 if media == "image" else mp["num_frames"]
            idx = preprocess.middle_frame_indices(t, frames.shape[0])
            pixels = self.frame_path.mllm_frames(frames[idx])
        tokens = self.vision_tokens(pixels)
        visual = self.run(names.CONNECTOR, {"vision_tokens": tokens})["visual_embeds"]       # (1, Q, H)
        embeds = self.embed_tokens(prompt.input_ids)                                          # (L, H)
        embeds[prompt.visual_mask] = visual[0]
        if prompt.track_box_positions.size:
            if boxes is None or len(boxes) != prompt.track_box_positions.size:
                got = 0 if boxes is None else len(boxes)
                raise InputError(f"question has {prompt.track_box_positions.size} <track_box> token(s) "
                                 f"but {got} box(es) were given")
            box_embeds = self.run(names.BOX_ENCODER, {"boxes": np.asarray(boxes, np.float32)})["box_embeds"]
            embeds[prompt.track_box_positions] = box_embeds
        with self.timings.timed("llm_prefill"):
            logits, _, past = self.llm(embeds[None], None)
        answer = Answer(text="", raw_text="", task="none", token_ids=[])
        next_logits = logits[0, -1]
        for _ in range(max_new_tokens):
            token = int(np.argmax(next_logits))
            chosen_logits = next_logits
            answer.token_ids.append(token)
            if token == self.text.eos:
                break
            task = self.text.triggers.get(token)
            with self.timings.timed("llm_decode"):
                if task is None:
                    logits, _, past = self.llm(self.embed_tokens([token])[None], past)
                    next_logits = logits[0, -1]
                    continue
                step = np.concatenate([self.embed_tokens([token]), self.task_embeddings[task][None]])[None]
                logits, hidden, past = self.llm(step, past)
                next_logits = logits[0, -1]
            if answer.task == "none":
                answer.task = task
            answer.trigger_probability.setdefault(task, _softmax_at(chosen_logits, token))
            h = hidden[0, -1]
            answer.prompts.setdefault(task, h)
            if run_heads:
                self.run_head(task, h, frames, fps, question, answer)
        answer.text, answer.raw_text = self.text.answer(answer.token_ids)
        return answer

    def route(self, h: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(names.TASK_ROUTER, {"hidden": h[None].astype(np.float32)})

    def run_head(self, task: str, h: np.ndarray, frames: np.ndarray, fps: float, question: str, answer: Answer) -> None:
        height, width = frames.shape[1:3]
        prompts = self.route(h)
        if task == "region":
            box = prompts["region_box"][0].astype(np.float32)
            scale = np.array([width, height, width, height], np.float32)
            answer.region.append({"frame": 0, "box": (box * scale).tolist(), "box_normalised": box.tolist()})
        elif task == "temporal":
            answer.temporal.append(self.temporal(prompts["temporal_prompt"], frames, fps, question))
        elif task == "track":
            answer.track.append(self.track_clip(prompts["track_prompt"], frames))

    def temporal(self, prompt_token: np.ndarray, frames: np.ndarray, fps: float, question: str) -> dict:
        """The temporal head over the whole clip (offline answer): windows in seconds and per-clip saliency."""
        tp = self.pre["temporal"]
        clips = preprocess.clip_frame_indices(frames.shape[0], fps, tp["clip_s"], tp["frames_per_clip"])
        feats = self.clip_features(np.stack([frames[i] for i in clips]))
        return self.temporal_from_features(prompt_token, feats, question, min(len(clips) * tp["clip_s"],
                                                                              frames.shape[0] / fps))

    def clip_features(self, clip_frames: np.ndarray) -> np.ndarray:
        """[Lv, Tc, H, W, 3] uint8 (Tc frames per clip) -> [Lv, Dv] the temporal head's per-clip video features
        (mean-pooled normalised vision tokens; the model side's `InternalFeatures`)."""
        tp = self.pre["temporal"]
        if tp["features"] != "internal":
            raise InputError(f"temporal features {tp['features']!r} need external encoders not in the artifacts")
        with self.timings.timed("preprocess"):
            pixels = np.concatenate([self.frame_path.mllm_frames(c) for c in clip_frames])
        return self.vision_tokens(pixels).mean(axis=1)

    def temporal_from_features(self, prompt_token: np.ndarray, feats: np.ndarray, question: str,
                               duration_s: float) -> dict:
        """feats [Lv, Dv] (+ TEF added here) -> {"windows": [[start_s, end_s, score], ...], "saliency", ...}."""
        tp = self.pre["temporal"]
        video = np.concatenate([feats, preprocess.tef(len(feats))], axis=1)[None].astype(np.float32)
        ids = self.text.question_ids(question, tp["max_text_tokens"])
        text = self.embed_tokens(ids)[None]
        out = self.run(names.TEMPORAL_HEAD, {
            "text_feats": text, "text_mask": np.ones(text.shape[:2], bool), "video_feats": video,
            "video_mask": np.ones(video.shape[:2], bool), "prompt_token": prompt_token.astype(np.float32)})
        with self.timings.timed("postprocess"):
            windows = postprocess.unique_windows(
                postprocess.decode_windows(out["pred_logits"][0], out["pred_spans"][0], duration_s, tp["clip_s"]))
            raw = postprocess.decode_windows(out["pred_logits"][0], out["pred_spans"][0], duration_s, tp["clip_s"],
                                             snap=False)
            saliency = postprocess.decode_saliency(out["saliency"][0], np.ones(video.shape[1], bool))
        return {"windows": windows, "windows_raw": raw, "saliency": saliency, "clip_len_s": tp["clip_s"]}

    # ---------------------------------------------------------------------------------- fast path
    def tracker(self, sparse_prompt: np.ndarray) -> MaskTracker:
        return MaskTracker(self.run, self.tracker_cfg, sparse_prompt)

    def track_frame(self, tracker: MaskTracker, frame: np.ndarray) -> list[dict]:
        """One frame through the fast path; per object {"mask" [H, W] bool, "box" px or None, "score",
        "iou", "object_logit"}. score: P(object present) = sigmoid of SAM2's object-score logit (SAM2 calls
        the object present when the logit is > 0, i.e. score > 0.5); iou: the decoder's own prediction of
        the mask's IoU with the object."""
        with self.timings.timed("preprocess"):
            pixels = self.frame_path.mask_frame(frame)
        start = time.perf_counter()
        step = tracker.step(pixels)
        self.timings.add("track_step", time.perf_counter() - start)
        height, width = frame.shape[:2]
        out = []
        with self.timings.timed("postprocess"):
            for o in range(step.mask_logits.shape[0]):
                mask, box = self.frame_path.mask_and_box(step.mask_logits[o, 0], height, width)
                logit = float(step.object_score[o, 0])
                out.append({"mask": mask, "box": box, "score": _sigmoid(logit), "object_logit": logit,
                            "iou": float(step.iou[o, 0])})
        return out

    def track_clip(self, sparse_prompt: np.ndarray, frames: np.ndarray) -> dict:
        tracker = self.tracker(sparse_prompt)
        masks, boxes, scores = [], [], []
        for frame in frames:
            r = self.track_frame(tracker, frame)[0]
            masks.append(r["mask"])
            boxes.append(r["box"])
            scores.append(r["score"])
        return {"masks": np.stack(masks), "boxes": boxes, "scores": scores}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _softmax_at(logits: np.ndarray, index: int) -> float:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return float(e[index] / e.sum())


def check_frames(frames) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be a uint8 array [N, H, W, 3] (RGB), got "
                         f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InputError(f"frames: empty array {list(frames.shape)}")
    return frames


def open(artifacts: str | Path, backend: str | Backend = "onnxruntime", verify: bool = True, **backend_args) -> Session:
    """Load an artifacts folder: read the manifest, check every file's sha256, load each graph on `backend`."""
    manifest = Manifest.load(artifacts)
    if verify:
        manifest.verify()
    if isinstance(backend, str):
        backend = open_backend(backend, **backend_args)
    return Session(manifest, backend)
