"""Synthetic grounding clips: coloured shapes moving over a dark background, with exact ground truth.

Two deterministic steps, then the questions:

    sample_clip_spec(rng, config) -> ClipSpec    the scene as data (JSON-serialisable, a few hundred bytes)
    render_clip(spec, name)       -> Clip        frames, masks, boxes, visible spans (numpy + OpenCV)
    make_clip(index, seed, config) -> Clip       both, retried until the clip is usable, plus its queries

`make_clip(i, seed)` depends only on (seed, i, config), so a trainer can draw clips on the fly, and
`tpo.data.files.make_dataset` writes the same clips as files (`tpo.data.files` also re-exports this
module's public names).

Conventions (every array and file uses them):
  * pixels: x to the right, y down; a box is [x1, y1, x2, y2] in pixels with x2, y2 exclusive, so a box
    of one pixel at column 5 has x1 = 5, x2 = 6; the COCO bbox is [x1, y1, x2 - x1, y2 - y1].
  * time: frame t covers [t / fps, (t + 1) / fps); a visible span is [start_s, end_s) over a run of
    consecutive frames in which the object is visible, exactly [first / fps, (last + 1) / fps).
  * visible: at least one pixel of the object shows, after clipping to the frame and after occlusion by
    objects in front. Boxes and masks describe that visible part only.
  * depth: objects are painted back to front in increasing `ObjectSpec.z`; the last painted wins a pixel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from tpo.errors import ConfigError

# the synthetic world's words (the tiny tokenizer's vocabulary is built from them)
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

GENERATOR_VERSION = "1"
RGB = {"red": (225, 40, 40), "green": (40, 200, 70), "blue": (50, 90, 240), "yellow": (235, 215, 40)}
# COCO category id of each (colour, shape): 1..12, colours outer, shapes inner.
CATEGORIES = tuple((c, s) for c in COLOURS for s in SHAPES)
TASKS = ("track", "region", "temporal", "conversation")
# The task trigger the model should emit for each query task ("none": answer in text only).
ROUTES = {"track": "track", "region": "region", "temporal": "temporal", "conversation": "none"}
QUERIES_PER_CLIP_MAX = 100  # qid = clip_index * QUERIES_PER_CLIP_MAX + j
_SHIFT = 4  # OpenCV fixed-point bits: shapes move smoothly by 1/16 px
_MAX_ATTEMPTS = 50


def category_id(colour: str, shape: str) -> int:
    return CATEGORIES.index((colour, shape)) + 1


@dataclass(frozen=True)
class SceneConfig:
    """What `sample_clip_spec` may draw. Every default of the generator and of `tpo-data` lives here."""

    width: int = 320
    height: int = 240
    fps_range: tuple[int, int] = (8, 30)              # integer frames per second, both ends included
    duration_range_s: tuple[float, float] = (4.0, 12.0)
    num_objects_range: tuple[int, int] = (1, 4)
    size_range_px: tuple[float, float] = (20.0, 80.0)  # circle diameter, square side, triangle base
    speed_range_px_s: tuple[float, float] = (20.0, 120.0)
    p_noise_background: float = 0.5   # else a plain dark colour
    p_roaming: float = 0.4            # per object: its bounce walls lie outside the frame (enters/leaves)
    p_crossing: float = 0.6           # per clip of >= 2 objects: two of them meet, one behind the other
    min_visible_s: float = 1.0        # every object shows for at least this long in total
    queries_per_task: int = 1         # each clip gets this many queries of each of TASKS
    qvh_clip_length_s: float = 2.0    # QVHighlights clip length for relevant_clip_ids / saliency_scores

    def __post_init__(self) -> None:
        for name in ("fps_range", "duration_range_s", "num_objects_range", "size_range_px", "speed_range_px_s"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ConfigError(f"SceneConfig.{name} = ({lo}, {hi}): need 0 < low <= high")
        if self.num_objects_range[1] > len(CATEGORIES):
            raise ConfigError(f"SceneConfig.num_objects_range: at most {len(CATEGORIES)} objects "
                              f"(one per colour-shape pair), got {self.num_objects_range[1]}")
        if self.size_range_px[1] >= min(self.width, self.height):
            raise ConfigError(f"SceneConfig.size_range_px: largest size {self.size_range_px[1]} must be smaller "
                              f"than the frame ({self.width}x{self.height})")
        for name in ("p_noise_background", "p_roaming", "p_crossing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SceneConfig.{name} = {getattr(self, name)}: a probability lies in [0, 1]")
        if self.min_visible_s > self.duration_range_s[0]:
            raise ConfigError(f"SceneConfig.min_visible_s = {self.min_visible_s} exceeds the shortest clip "
                              f"({self.duration_range_s[0]} s)")
        if not 1 <= self.queries_per_task * len(TASKS) <= QUERIES_PER_CLIP_MAX:
            raise ConfigError(f"SceneConfig.queries_per_task = {self.queries_per_task}: need 1.."
                              f"{QUERIES_PER_CLIP_MAX // len(TASKS)}")
        if self.qvh_clip_length_s <= 0:
            raise ConfigError(f"SceneConfig.qvh_clip_length_s = {self.qvh_clip_length_s}: must be > 0")

    @classmethod
    def from_dict(cls, d: dict) -> SceneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"SceneConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class ObjectSpec:
    """One shape and its motion. The centre moves at constant velocity and bounces inside `bounds`:
    centre(t) = fold(start + velocity * t) per axis, `start` being the unfolded position at t = 0 (px).
    `bounds` inside the frame keep the object in view; bounds beyond it let it leave and come back."""

    object_id: int
    colour: str
    shape: str
    size_px: float
    rgb: tuple[int, int, int]
    z: int                                      # painter's order: 0 is painted first (back-most)
    start: tuple[float, float]                  # unfolded centre at t = 0, px
    velocity: tuple[float, float]               # px / s
    bounds: tuple[float, float, float, float]   # centre range x_lo, y_lo, x_hi, y_hi, px

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the full shape, px."""
        s = self.size_px
        return s / 2, (s * math.sqrt(3) / 4 if self.shape == "triangle" else s / 2)


@dataclass(frozen=True)
class ClipSpec:
    """A whole scene as data: `render_clip(spec)` reproduces the clip bit for bit."""

    width: int
    height: int
    fps: int
    num_frames: int
    background: str                   # "plain" | "noise"
    background_rgb: tuple[int, int, int]
    background_seed: int
    objects: tuple[ObjectSpec, ...]

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClipSpec:
        objs = tuple(ObjectSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in o.items()})
                     for o in d["objects"])
        rest = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "objects"}
        return cls(**rest, objects=objs)


@dataclass(frozen=True)
class Query:
    """One question about a clip with its ground truth. `route` is the trigger the model should emit."""

    qid: int
    vid: str
    task: str                          # one of TASKS
    route: str                         # ROUTES[task]: "track" | "region" | "temporal" | "none"
    question: str
    answer: str                        # reference answer text (conversation: the string to match)
    object_id: int | None = None       # the object asked about (None for "how many shapes")
    frame: int | None = None           # region: the frame shown to the model as an image
    box: tuple[float, float, float, float] | None = None     # region: the object's box in that frame, px
    spans: tuple[tuple[float, float], ...] | None = None     # temporal: visible spans, s

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Query:
        d = dict(d)
        if d.get("box") is not None:
            d["box"] = tuple(d["box"])
        if d.get("spans") is not None:
            d["spans"] = tuple(tuple(s) for s in d["spans"])
        return cls(**d)


@dataclass
class Clip:
    """A rendered clip and its ground truth. T frames, N objects (index k = ObjectSpec.object_id)."""

    name: str                          # "clip_00012": the video's file stem and the QVHighlights vid
    spec: ClipSpec
    frames: np.ndarray | None          # uint8 [T, H, W, 3] RGB; None when loaded without frames
    labels: np.ndarray                 # uint8 [T, H, W]: 0 background, k + 1 the visible pixels of object k
    boxes: np.ndarray                  # float32 [T, N, 4] x1, y1, x2, y2 px of the visible part; NaN if unseen
    areas: np.ndarray                  # int64 [T, N] visible pixels
    occluded: np.ndarray               # bool [T, N]: partly or wholly hidden by an object in front
    spans: list[list[tuple[float, float]]]   # per object: visible spans [start_s, end_s)
    queries: list[Query] = field(default_factory=list)

    @property
    def fps(self) -> int:
        return self.spec.fps

    @property
    def num_frames(self) -> int:
        return self.spec.num_frames

    @property
    def duration_s(self) -> float:
        return self.spec.duration_s

    @property
    def visible(self) -> np.ndarray:
        """bool [T, N]: the object has at least one visible pixel."""
        return self.areas > 0

    def masks(self, k: int) -> np.ndarray:
        """bool [T, H, W]: the visible pixels of object k in every frame."""
        return self.labels == k + 1

    def mask(self, t: int, k: int) -> np.ndarray:
        """bool [H, W]: the visible pixels of object k in frame t."""
        return self.labels[t] == k + 1

    def box(self, t: int, k: int) -> tuple[float, float, float, float] | None:
        """[x1, y1, x2, y2] px of object k's visible part in frame t, or None when it is not visible."""
        if self.areas[t, k] == 0:
            return None
        return tuple(float(v) for v in self.boxes[t, k])


# ---- scene sampling ----------------------------------------------------------------------------------


def sample_clip_spec(rng: np.random.Generator, config: SceneConfig) -> ClipSpec:
    """Draw one scene. Only `rng` and `config` decide it."""
    w, h = config.width, config.height
    fps = int(rng.integers(config.fps_range[0], config.fps_range[1] + 1))
    lo_t, hi_t = (math.ceil(config.duration_range_s[0] * fps), math.floor(config.duration_range_s[1] * fps))
    num_frames = int(rng.integers(lo_t, max(lo_t, hi_t) + 1))
    duration = num_frames / fps
    n = int(rng.integers(config.num_objects_range[0], config.num_objects_range[1] + 1))
    combos = rng.choice(len(CATEGORIES), size=n, replace=False)
    depth = rng.permutation(n)
    objects = []
    for k in range(n):
        colour, shape = CATEGORIES[int(combos[k])]
        size = float(rng.uniform(*config.size_range_px))
        speed = float(rng.uniform(*config.speed_range_px_s))
        angle = float(rng.uniform(0, 2 * math.pi))
        rgb = tuple(int(v) for v in np.clip(np.array(RGB[colour]) + rng.integers(-20, 21, 3), 0, 255))
        obj = ObjectSpec(object_id=k, colour=colour, shape=shape, size_px=size, rgb=rgb, z=int(depth[k]),
                         start=(0.0, 0.0), velocity=(speed * math.cos(angle), speed * math.sin(angle)),
                         bounds=(0.0, 0.0, 0.0, 0.0))
        hx, hy = obj.half_extent
        roam = rng.random() < config.p_roaming
        axes = int(rng.integers(0, 3))                         # roaming along x, y or both
        margins = rng.uniform(0.25, 1.5, 2) * size             # how far beyond the border it may go
        rx = roam and axes in (0, 2)
        ry = roam and axes in (1, 2)
        bounds = (-hx - margins[0] if rx else hx, -hy - margins[1] if ry else hy,
                  w + hx + margins[0] if rx else w - hx, h + hy + margins[1] if ry else h - hy)
        bounds = tuple(float(b) for b in bounds)
        start = (float(rng.uniform(bounds[0], bounds[2])), float(rng.uniform(bounds[1], bounds[3])))
        objects.append(replace(obj, start=start, bounds=bounds))
    if n >= 2 and rng.random() < config.p_crossing:
        # two objects meet at time tm near point p, so the back one passes behind the front one
        a, b = (int(i) for i in rng.choice(n, size=2, replace=False))
        tm = float(rng.uniform(0.25, 0.75)) * duration
        pad = config.size_range_px[1] / 2
        p = np.array([rng.uniform(pad, w - pad), rng.uniform(pad, h - pad)])
        offset = rng.uniform(-0.35, 0.35, 2) * min(objects[a].size_px, objects[b].size_px)
        for i, target in ((a, p), (b, p + offset)):
            o = objects[i]
            target = np.clip(target, o.bounds[:2], o.bounds[2:])
            objects[i] = replace(o, start=tuple(float(target[j] - o.velocity[j] * tm) for j in range(2)))
    noise = rng.random() < config.p_noise_background
    background_rgb = tuple(int(v) for v in rng.integers(0, 41, 3))
    return ClipSpec(width=w, height=h, fps=fps, num_frames=num_frames, background="noise" if noise else "plain",
                    background_rgb=background_rgb, background_seed=int(rng.integers(0, 2**31 - 1)),
                    objects=tuple(objects))


def object_centres(obj: ObjectSpec, fps: float, num_frames: int) -> np.ndarray:
    """float64 [T, 2]: the centre (x, y) px in every frame, bounced off `obj.bounds`."""
    t = np.arange(num_frames) / fps
    out = np.empty((num_frames, 2))
    for j in range(2):
        lo, hi = obj.bounds[j], obj.bounds[j + 2]
        u = obj.start[j] + obj.velocity[j] * t
        span = hi - lo
        if span <= 0:
            out[:, j] = lo
            continue
        y = np.mod(u - lo, 2 * span)
        out[:, j] = lo + np.where(y <= span, y, 2 * span - y)
    return out


def render_background(spec: ClipSpec) -> np.ndarray:
    """uint8 [H, W, 3]: a plain dark colour, or the same colour with a smooth low-contrast noise texture."""
    import cv2

    h, w = spec.height, spec.width
    base = np.array(spec.background_rgb, np.float32)
    if spec.background == "plain":
        return np.broadcast_to(base.astype(np.uint8), (h, w, 3)).copy()
    rng = np.random.default_rng(spec.background_seed)
    coarse = rng.normal(0, 12, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 4, (h, w, 3)).astype(np.float32)
    return np.clip(base + smooth + fine, 0, 80).astype(np.uint8)


def _shape_points(obj: ObjectSpec, cx: float, cy: float, ox: int, oy: int) -> np.ndarray:
    """int32 [P, 2]: the polygon of a square or triangle in fixed point, relative to (ox, oy)."""
    hx, hy = obj.half_extent
    if obj.shape == "square":
        pts = [(cx - hx, cy - hy), (cx + hx, cy - hy), (cx + hx, cy + hy), (cx - hx, cy + hy)]
    else:  # triangle, apex up
        pts = [(cx, cy - hy), (cx + hx, cy + hy), (cx - hx, cy + hy)]
    return np.round((np.array(pts) - (ox, oy)) * (1 << _SHIFT)).astype(np.int32)


def _draw(canvas: np.ndarray, obj: ObjectSpec, cx: float, cy: float, ox: int = 0, oy: int = 0) -> None:
    """Fill the shape with 1 on a uint8 [h, w] canvas whose top-left pixel is (ox, oy) in the frame."""
    import cv2

    if obj.shape == "circle":
        one = 1 << _SHIFT
        centre = (round((cx - ox) * one), round((cy - oy) * one))
        cv2.circle(canvas, centre, round(obj.size_px / 2 * one), 1, thickness=-1, lineType=cv2.LINE_8,
                   shift=_SHIFT)
    else:
        cv2.fillPoly(canvas, [_shape_points(obj, cx, cy, ox, oy)], 1, lineType=cv2.LINE_8, shift=_SHIFT)


def object_footprint(spec: ClipSpec, k: int, t: int) -> np.ndarray:
    """bool [H, W]: object k's whole shape in frame t, clipped to the frame, ignoring occlusion."""
    obj = spec.objects[k]
    cx, cy = object_centres(obj, spec.fps, spec.num_frames)[t]
    canvas = np.zeros((spec.height, spec.width), np.uint8)
    _draw(canvas, obj, cx, cy)
    return canvas.astype(bool)


def render_labels(spec: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """Paint every object back to front into a label map.

    Returns labels uint8 [T, H, W] (0 background, k + 1 object k's visible pixels) and
    occluded bool [T, N] (object k lost at least one pixel to an object painted after it).
    """
    h, w, n, num = spec.height, spec.width, len(spec.objects), spec.num_frames
    labels = np.zeros((num, h, w), np.uint8)
    occluded = np.zeros((num, n), bool)
    order = sorted(range(n), key=lambda k: spec.objects[k].z)
    centres = [object_centres(o, spec.fps, num) for o in spec.objects]
    for k in order:
        obj = spec.objects[k]
        hx, hy = obj.half_extent
        for t in range(num):
            cx, cy = centres[k][t]
            # region of interest around the shape, clipped to the frame (2 px spare for rasterisation)
            x0, x1 = max(0, math.floor(cx - hx) - 2), min(w, math.ceil(cx + hx) + 3)
            y0, y1 = max(0, math.floor(cy - hy) - 2), min(h, math.ceil(cy + hy) + 3)
            if x0 >= x1 or y0 >= y1:
                continue
            roi = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _draw(roi, obj, cx, cy, x0, y0)
            covered = roi.astype(bool)
            below = labels[t, y0:y1, x0:x1]
            hidden = np.unique(below[covered])
            occluded[t, hidden[hidden > 0] - 1] = True
            below[covered] = k + 1
    return labels, occluded


def _boxes_from_labels(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """boxes float32 [T, N, 4] (NaN where unseen) and areas int64 [T, N] from a label map [T, H, W]."""
    num, h, w = labels.shape
    boxes = np.full((num, n, 4), np.nan, np.float32)
    areas = np.zeros((num, n), np.int64)
    for k in range(n):
        m = labels == k + 1                      # [T, H, W]
        areas[:, k] = m.sum(axis=(1, 2))
        rows, cols = m.any(axis=2), m.any(axis=1)  # [T, H], [T, W]
        seen = areas[:, k] > 0
        boxes[seen, k, 0] = cols[seen].argmax(1)
        boxes[seen, k, 1] = rows[seen].argmax(1)
        boxes[seen, k, 2] = w - cols[seen, ::-1].argmax(1)
        boxes[seen, k, 3] = h - rows[seen, ::-1].argmax(1)
    return boxes, areas


def visible_spans(visible: np.ndarray, fps: float) -> list[tuple[float, float]]:
    """[start_s, end_s) = [first / fps, (last + 1) / fps) of each run of True in a bool [T] array."""
    v = np.concatenate([[False], np.asarray(visible, bool), [False]])
    edges = np.flatnonzero(np.diff(v.astype(np.int8)))   # starts at even positions, ends at odd
    return [(int(s) / fps, int(e) / fps) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def render_clip(spec: ClipSpec, name: str = "clip") -> Clip:
    """Frames and ground truth of a scene (no queries). Deterministic in `spec`."""
    labels, occluded = render_labels(spec)
    n = len(spec.objects)
    boxes, areas = _boxes_from_labels(labels, n)
    lut = np.zeros((n + 1, 3), np.uint8)
    for k, o in enumerate(spec.objects):
        lut[k + 1] = o.rgb
    frames = np.broadcast_to(render_background(spec), labels.shape + (3,)).copy()
    painted = labels > 0
    frames[painted] = lut[labels[painted]]
    spans = [visible_spans(areas[:, k] > 0, spec.fps) for k in range(n)]
    return Clip(name=name, spec=spec, frames=frames, labels=labels, boxes=boxes, areas=areas,
                occluded=occluded, spans=spans)


# ---- queries -------------------------------------------------------------------------------------------


def qvhighlights_clip_labels(spans: list[tuple[float, float]], duration_s: float,
                             clip_length_s: float = 2.0) -> tuple[list[int], list[list[int]]]:
    """QVHighlights `relevant_clip_ids` and `saliency_scores` for visible spans.

    The video is cut into int(duration / clip_length) clips (as QVHighlights' `mk_gt_scores` counts them);
    clip i is relevant when the object shows for at least half of it (or, if no clip reaches half, the
    clip where it shows longest). Its score, the same for the 3 "annotators", is round(4 * fraction of
    the clip in which the object shows), so relevant clips score 2..4 (1 only for the fallback clip).
    """
    num_clips = int(duration_s / clip_length_s)
    cover = np.zeros(num_clips)
    for i in range(num_clips):
        a, b = i * clip_length_s, (i + 1) * clip_length_s
        cover[i] = sum(max(0.0, min(e, b) - max(s, a)) for s, e in spans) / clip_length_s
    ids = [i for i in range(num_clips) if cover[i] >= 0.5 - 1e-9]
    if not ids and num_clips and cover.max() > 0:
        ids = [int(cover.argmax())]
    return ids, [[max(1, round(4 * float(cover[i])))] * 3 for i in ids]


def _fmt_s(x: float) -> str:
    return f"{x:.1f}"


def temporal_answer(name: str, spans: list[tuple[float, float]]) -> str:
    parts = " and ".join(f"from {_fmt_s(s)} to {_fmt_s(e)} seconds" for s, e in spans)
    return f"The {name} appears {parts}."


def make_queries(clip: Clip, clip_index: int, rng: np.random.Generator, config: SceneConfig) -> list[Query]:
    """`config.queries_per_task` queries of each task, in TASKS order, about the rendered clip."""
    spec, n = clip.spec, len(clip.spec.objects)
    objs = spec.objects
    temporal_ok = [k for k in range(n)
                   if qvhighlights_clip_labels(clip.spans[k], spec.duration_s, config.qvh_clip_length_s)[0]]
    assert temporal_ok, "make_clip only keeps clips with an object that QVHighlights can label"
    out: list[Query] = []

    def add(task: str, question: str, answer: str, **kw) -> None:
        out.append(Query(qid=clip_index * QUERIES_PER_CLIP_MAX + len(out), vid=clip.name, task=task,
                         route=ROUTES[task], question=question, answer=answer, **kw))

    for _ in range(config.queries_per_task):
        # tracking is prompted on frame 0 (as the release does): ask about an object well visible there
        first = [k for k in range(n) if clip.areas[0, k] >= 0.5 * clip.areas[:, k].max() > 0]
        k = int(first[rng.integers(len(first))]) if first else int(rng.integers(n))
        add("track", f"track the {objs[k].name}", f"Tracking the {objs[k].name}.", object_id=k)

        k = int(rng.integers(n))
        area = clip.areas[:, k]
        good = np.flatnonzero(area >= 0.5 * area.max())       # not a sliver at the border or behind another
        t = int(good[rng.integers(len(good))])
        add("region", f"where is the {objs[k].name}?", f"The {objs[k].name} is here.", object_id=k, frame=t,
            box=clip.box(t, k))

        # prefer objects that enter, leave or hide (spans not the whole clip), so answers vary
        partial = [k for k in temporal_ok if not clip.visible[:, k].all()]
        pool = partial if partial and rng.random() < 0.8 else temporal_ok
        k = int(pool[rng.integers(len(pool))])
        spans = tuple(clip.spans[k])
        add("temporal", f"when does the {objs[k].name} appear?", temporal_answer(objs[k].name, list(spans)),
            object_id=k, spans=spans)

        kinds = ["count"]
        unique_shape = [k for k in range(n) if sum(o.shape == objs[k].shape for o in objs) == 1]
        unique_colour = [k for k in range(n) if sum(o.colour == objs[k].colour for o in objs) == 1]
        kinds += ["colour"] * bool(unique_shape) + ["shape"] * bool(unique_colour)
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "count":
            word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
            add("conversation", "how many shapes are there?", word)
        elif kind == "colour":
            k = int(unique_shape[rng.integers(len(unique_shape))])
            add("conversation", f"what colour is the {objs[k].shape}?", objs[k].colour, object_id=k)
        else:
            k = int(unique_colour[rng.integers(len(unique_colour))])
            add("conversation", f"what shape is the {objs[k].colour} object?", objs[k].shape, object_id=k)
    return out


def clip_name(index: int) -> str:
    return f"clip_{index:05d}"


def _usable(clip: Clip, config: SceneConfig) -> bool:
    frames_needed = math.ceil(config.min_visible_s * clip.fps - 1e-9)
    if (clip.areas > 0).sum(axis=0).min() < frames_needed:
        return False
    return any(qvhighlights_clip_labels(s, clip.duration_s, config.qvh_clip_length_s)[0] for s in clip.spans)


def make_clip(index: int, seed: int, config: SceneConfig | None = None) -> Clip:
    """Clip `index` of the stream `seed`: scene, frames, ground truth and queries.

    Depends only on (seed, index, config). Scenes where an object shows for less than
    `config.min_visible_s` are redrawn (from the same random stream, so still deterministic).
    """
    config = config or SceneConfig()
    if not (isinstance(seed, int) and seed >= 0) or not (isinstance(index, int) and index >= 0):
        raise ConfigError(f"seed and clip index must be integers >= 0, got seed={seed!r}, index={index!r}")
    rng = np.random.default_rng([seed, index])
    for _ in range(_MAX_ATTEMPTS):
        clip = render_clip(sample_clip_spec(rng, config), clip_name(index))
        if _usable(clip, config):
            clip.queries = make_queries(clip, index, rng, config)
            return clip
    raise ConfigError(f"no usable scene in {_MAX_ATTEMPTS} draws for seed {seed}, clip {index}: every object "
                      f"must show for {config.min_visible_s} s; lower min_visible_s or p_roaming")


def iter_clips(seed: int, config: SceneConfig | None = None, start: int = 0, stop: int | None = None):
    """Yield make_clip(i, seed, config) for i = start, start + 1, ... (forever when stop is None)."""
    i = start
    while stop is None or i < stop:
        yield make_clip(i, seed, config)
        i += 1

