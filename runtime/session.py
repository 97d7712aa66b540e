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
embedding]); tests/runtime pin the agreement with the PyTorch pipeline. Graph inputs and outputs go through the
contract's specs (`self.run(G.CONNECTOR, vision_tokens=x).visual_embeds`): no tensor name is spelled here.
Each head's offline answer lives in its task module (`runtime/tasks`), found by the routed task's name.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo.contract import EMBEDDINGS, TASK_EMBEDDING, TOKEN_TABLE, TOKENIZER, Manifest
from tpo.contract import graphs as G
from tpo.contract import tasks as T
from tpo.contract.graphs import GraphSpec, Outputs
from tpo.errors import InputError

from . import preprocess
from .backend import Backend, open_backend
from .frame_path import FramePath, select_frame_path
from .text import TextCodec
from .timings import Timings
from .tracker import MaskTracker


@dataclass
class Answer:
    text: str
    raw_text: str
    task: str                                   # first triggered task, or tasks.CHAT ("none")
    token_ids: list[int]
    results: dict[str, list[dict]] = field(default_factory=dict)   # task -> each run of its head's offline answer
    prompts: dict[str, np.ndarray] = field(default_factory=dict)   # task -> router input hidden [H]
    # task -> probability the LLM gave the trigger token when it chose it (softmax over the vocabulary)
    trigger_probability: dict[str, float] = field(default_factory=dict)
    truncated: bool = False     # decoding reached max_new_tokens before the end token

    @property
    def region(self) -> list[dict]:        # {"frame", "box" (px), "box_normalised"}
        return self.results.get(T.REGION.name, [])

    @property
    def temporal(self) -> list[dict]:      # {"windows", "windows_raw", "saliency", "clip_len_s"}
        return self.results.get(T.TEMPORAL.name, [])

    @property
    def track(self) -> list[dict]:         # per object: {"masks" [T, H, W], "boxes", "scores"}
        return self.results.get(T.TRACK.name, [])


class Session:
    def __init__(self, manifest: Manifest, backend: Backend, frame_path: FramePath | None = None):
        from safetensors.numpy import load_file

        self.manifest = manifest
        self.backend = backend
        self.timings = Timings()
        self.pre, self.llm_cfg, self.tracker_cfg = manifest.preprocess, manifest.llm, manifest.tracker
        self.dims = manifest.dims
        self.frame_path = frame_path or select_frame_path(self.pre)   # GPU kernels when a GPU can run them
        self.runners = {name: backend.load(entry) for name, entry in manifest.graphs.items()}
        emb = load_file(str(manifest.file(EMBEDDINGS)))
        self.token_table = emb[TOKEN_TABLE]
        self.task_embeddings = {t: emb[TASK_EMBEDDING.format(task=t)].astype(np.float32)
                                for t in manifest.tokens.placeholders}
        self.text = TextCodec(manifest.file(TOKENIZER), manifest.tokens, self.llm_cfg.num_visual_tokens,
                              self.llm_cfg.max_prompt_tokens)
        self.vision_graphs = {frames: G.graph(name) for frames, name in manifest.vision_graphs.items()}

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
    def run(self, spec: GraphSpec, past: dict | None = None, **inputs: np.ndarray) -> Outputs:
        """One graph on this session's backend, timed under the graph's name; inputs by their declared names."""
        feed = spec.feed(past, **inputs)
        with self.timings.timed(spec.name):
            return spec.outputs_of(self.runners[spec.name].run(feed))

    def embed_tokens(self, ids) -> np.ndarray:
        return self.token_table[np.asarray(ids, dtype=np.int64)].astype(np.float32)

    def vision_tokens(self, pixels: np.ndarray) -> np.ndarray:
        """pixels [B, 3, T, S, S] -> normalised vision tokens, in batches the graph's profile allows."""
        spec = self.vision_graphs.get(pixels.shape[2])
        if spec is None:
            raise InputError(f"no vision graph for {pixels.shape[2]} frames (have {sorted(self.vision_graphs)})")
        step = self.dims["batch"].max
        return np.concatenate([self.run(spec, pixels=pixels[i: i + step]).vision_tokens
                               for i in range(0, len(pixels), step)])

    def llm(self, embeds: np.ndarray, past: dict[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, dict]:
        """embeds [1, s, H] + past -> (logits [1, s, V], hidden [1, s, H], present as the next past)."""
        cfg = self.llm_cfg
        if past is None:
            past = {n: np.zeros((1, cfg.num_kv_heads, 0, cfg.head_dim), np.float32) for n in cfg.past_names()}
        past_len = next(iter(past.values())).shape[2]
        s = embeds.shape[1]
        out = self.run(G.LLM, past, inputs_embeds=embeds.astype(np.float32),
                       attention_mask=np.ones((1, past_len + s), np.int64),
                       position_ids=np.arange(past_len, past_len + s, dtype=np.int64)[None])
        return out.logits, out.hidden_states, out.present

    # ---------------------------------------------------------------------------------- slow path
    def _prompt_embeds(self, question: str, frames: np.ndarray, fps: float, boxes: np.ndarray | None) -> np.ndarray:
        """The prompt's token embeddings [L, H] with the visual tokens (and any user boxes) spliced in."""
        media = "image" if frames.shape[0] == 1 else "video"
        indices = preprocess.middle_frame_indices(1 if media == "image" else self.pre.mllm.num_frames, frames.shape[0])
        prompt = self.text.prompt(question, media, indices, fps)
        with self.timings.timed("question_preprocess"):    # the slow path's, apart from each frame's
            pixels = self.frame_path.mllm_frames(frames[indices])
        visual = self.run(G.CONNECTOR, vision_tokens=self.vision_tokens(pixels)).visual_embeds   # (1, Q, H)
        embeds = self.embed_tokens(prompt.input_ids)                                             # (L, H)
        embeds[prompt.visual_mask] = visual[0]
        if prompt.track_box_positions.size:
            if boxes is None or len(boxes) != prompt.track_box_positions.size:
                got = 0 if boxes is None else len(boxes)
                raise InputError(f"question has {prompt.track_box_positions.size} {T.TRACK_BOX} token(s) "
                                 f"but {got} box(es) were given")
            embeds[prompt.track_box_positions] = self.run(G.BOX_ENCODER, boxes=np.asarray(boxes, np.float32)).box_embeds
        return embeds

    def ask(self, question: str, frames: np.ndarray, fps: float, boxes: np.ndarray | None = None,
            max_new_tokens: int = 32, run_heads: bool = True) -> Answer:
        """Answer `question` about `frames` ([N, H, W, 3] uint8 RGB; one frame = an image) and run each
        triggered head. boxes [K, 4] normalised x1,y1,x2,y2, one per `<track_box>` in the question."""
        frames = check_frames(frames)
        if not fps > 0:
            raise InputError(f"fps must be > 0, got {fps}")
        embeds = self._prompt_embeds(question, frames, fps, boxes)
        with self.timings.timed("llm_prefill"):
            logits, _, past = self.llm(embeds[None], None)
        answer = Answer(text="", raw_text="", task=T.CHAT, token_ids=[])
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
            if answer.task == T.CHAT:
                answer.task = task
            answer.trigger_probability.setdefault(task, _softmax_at(chosen_logits, token))
            answer.prompts.setdefault(task, hidden[0, -1])
            if run_heads:
                self.run_head(task, hidden[0, -1], frames, fps, question, answer)
        answer.truncated = not answer.token_ids or answer.token_ids[-1] != self.text.eos
        answer.text, answer.raw_text = self.text.answer(answer.token_ids)
        return answer

    def route(self, h: np.ndarray) -> Outputs:
        """The task router on one hidden state [H]: every head's prompt (batch of one)."""
        return self.run(G.TASK_ROUTER, hidden=h[None].astype(np.float32))

    def head_prompt(self, task: str, h: np.ndarray) -> np.ndarray:
        """The router output that is `task`'s head prompt (the contract's `Task.router_output`)."""
        return self.route(h)[T.task(task).router_output]

    def run_head(self, task: str, h: np.ndarray, frames: np.ndarray, fps: float, question: str, answer: Answer) -> None:
        """The offline answer of `task`'s head over `frames` (its runtime task module's `offline`)."""
        from .tasks import TASK_STREAMS

        result = TASK_STREAMS[task].offline(self, self.head_prompt(task, h), frames, fps, question)
        answer.results.setdefault(task, []).append(result)

    # ---------------------------------------------------------------------------------- fast path
    def tracker(self, sparse_prompt: np.ndarray) -> MaskTracker:
        return MaskTracker(self.run, self.tracker_cfg, sparse_prompt)

    def box_prompt(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [K, 4] (x1, y1, x2, y2 in 0..1 of the frame) -> SAM2's sparse prompt [K, 3, C] through SAM2's own
        prompt encoder (`mask_box_prompt`): a region answer, or any box, handed to `tracker`."""
        if G.MASK_BOX_PROMPT.name not in self.runners:
            raise InputError(f"{self.manifest.root}: no {G.MASK_BOX_PROMPT.name} graph (exported before the "
                             "region-to-track hand-off); export again to follow a box")
        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
        return self.run(G.MASK_BOX_PROMPT, prompt_box=boxes).box_prompt

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
        if backend == "tensorrt":       # engines are found by the exact profile of the manifest's dims
            backend_args.setdefault("dims", manifest.dims)
        backend = open_backend(backend, **backend_args)
    return Session(manifest, backend)
