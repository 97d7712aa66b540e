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
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from tpo.errors import ConfigError

# the synthetic world's words (the tiny tokenizer's vocabulary is built from them)
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

GENERATOR_VERSION = "2"
RGB = {"red": (225, 40, 40), "green": (40, 200, 70), "blue": (50, 90, 240), "yellow": (235, 215, 40)}
# COCO category id of each (colour, shape): 1..12, colours outer, shapes inner.
CATEGORIES = tuple((c, s) for c in COLOURS for s in SHAPES)
TASKS = ("track", "region", "temporal", "conversation")
# The task trigger the model should emit for each query task ("none": answer in text only).
ROUTES = {"track": "track", "region": "region", "temporal": "temporal", "conversation": "none"}
# How an object spends the clip: "stay" in view throughout; "window" in the scene for one window of
# `span_fraction_range` of the clip (it enters and/or leaves); "return" in view at the start, leaves, comes back.
ROLES = ("stay", "window", "return")
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
    fps_range: tuple[int, int] = (8, 15)              # integer frames per second, both ends included
    duration_range_s: tuple[float, float] = (6.0, 12.0)
    num_objects_range: tuple[int, int] = (2, 5)
    size_range_px: tuple[float, float] = (20.0, 80.0)  # circle diameter, square side, triangle base
    speed_range_px_s: tuple[float, float] = (20.0, 120.0)
    p_noise_background: float = 0.5   # else a plain dark colour
    p_window: float = 0.4             # per object: in the scene for one window (enters and/or leaves), see ROLES
    p_return: float = 0.3             # per object: in view at the start, leaves, comes back
    span_fraction_range: tuple[float, float] = (0.1, 0.6)   # a window's length, fraction of the clip (log-uniform)
    min_span_s: float = 1.0           # a window (and each part of a return) lasts at least this long (as the clip allows)
    p_crossing: float = 0.6           # per clip of >= 2 objects: two of them meet, one behind the other
    min_visible_s: float = 1.0        # every object shows for at least this long in total
    queries_per_task: int = 1         # each clip gets this many queries of each of TASKS
    qvh_clip_length_s: float = 2.0    # QVHighlights clip length for relevant_clip_ids / saliency_scores

    def __post_init__(self) -> None:
        for name in ("fps_range", "duration_range_s", "num_objects_range", "size_range_px", "speed_range_px_s",
                     "span_fraction_range"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ConfigError(f"SceneConfig.{name} = ({lo}, {hi}): need 0 < low <= high")
        if self.span_fraction_range[1] >= 1.0:
            raise ConfigError(f"SceneConfig.span_fraction_range = {self.span_fraction_range}: a window is part of "
                              "the clip, so its high end must be < 1")
        if self.num_objects_range[1] > len(CATEGORIES):
            raise ConfigError(f"SceneConfig.num_objects_range: at most {len(CATEGORIES)} objects "
                              f"(one per colour-shape pair), got {self.num_objects_range[1]}")
        if self.size_range_px[1] >= min(self.width, self.height):
            raise ConfigError(f"SceneConfig.size_range_px: largest size {self.size_range_px[1]} must be smaller "
                              f"than the frame ({self.width}x{self.height})")
        for name in ("p_noise_background", "p_window", "p_return", "p_crossing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SceneConfig.{name} = {getattr(self, name)}: a probability lies in [0, 1]")
        if self.p_window + self.p_return > 1.0:
            raise ConfigError(f"SceneConfig.p_window + p_return = {self.p_window + self.p_return}: at most 1 "
                              "(the rest of the objects stay in view)")
        if self.min_visible_s > self.duration_range_s[0]:
            raise ConfigError(f"SceneConfig.min_visible_s = {self.min_visible_s} exceeds the shortest clip "
                              f"({self.duration_range_s[0]} s)")
        if not self.min_span_s > 0:
            raise ConfigError(f"SceneConfig.min_span_s = {self.min_span_s}: must be > 0")
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


Keyframe = tuple[float, float, float]      # (t_s, x_px, y_px) of the shape's centre


@dataclass(frozen=True)
class ObjectSpec:
    """One shape and its path. The object is in the scene during each of its `segments`: a polyline of
    keyframes (t, x, y) followed at constant speed between keyframes; outside every segment it is not drawn.
    A segment that starts after 0 s starts just outside the frame (the object enters), one that ends before
    the clip's end ends just outside (it leaves). `role` says which of ROLES drew it."""

    object_id: int
    colour: str
    shape: str
    size_px: float
    rgb: tuple[int, int, int]
    z: int                                      # painter's order: 0 is painted first (back-most)
    role: str                                   # one of ROLES
    segments: tuple[tuple[Keyframe, ...], ...]  # each: keyframes in increasing time

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the full shape, px."""
        s = self.size_px
        return s / 2, (s * math.sqrt(3) / 4 if self.shape == "triangle" else s / 2)


def _tuples(v):
    """JSON lists back to (nested) tuples."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


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
    countable: bool = False           # drawn for a count question: every object shows long enough to be counted

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClipSpec:
        objs = tuple(ObjectSpec(**{k: _tuples(v) for k, v in o.items()}) for o in d["objects"])
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


# A third of the clips are drawn for a count question (ClipSpec.countable): every object's window is then at least
# COUNTABLE_FRACTION of the clip, so 8 even samples see them all. Drawn before the scene, so that the count's
# answer follows num_objects_range (uniform) and not which scenes happen to show every object.
P_COUNT = 1 / 3
RETURN_MAX_FRACTION = 0.45     # each part of a return: so the object is gone for at least a tenth of the clip
COUNTABLE_FRACTION = 0.2
_OUT_PX = 2.0        # a centre this far beyond (border + half extent) leaves no pixel in view
_WALK_TRIES = 8      # random waypoints tried before a walk heads for the border


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def _inner_point(rng: np.random.Generator, half: tuple[float, float], w: int, h: int) -> np.ndarray:
    """A centre where the whole shape is in view."""
    return np.array([rng.uniform(half[0], w - half[0]), rng.uniform(half[1], h - half[1])])


def _exit(p: np.ndarray, half: tuple[float, float], w: int, h: int) -> tuple[np.ndarray, float]:
    """The nearest centre just outside the frame from p (straight through the nearest border) and its distance."""
    hx, hy = half[0] + _OUT_PX, half[1] + _OUT_PX
    x, y = float(p[0]), float(p[1])
    options = [(x + hx, (-hx, y)), (w + hx - x, (w + hx, y)), (y + hy, (x, -hy)), (h + hy - y, (x, h + hy))]
    dist, q = min(options, key=lambda o: o[0])
    return np.array(q), max(dist, 0.0)


def _walk(rng: np.random.Generator, start: np.ndarray, budget_s: float, speed: float, half: tuple[float, float],
          w: int, h: int, leave: bool) -> list[tuple[float, np.ndarray]]:
    """A path from `start` (time 0): random in-view waypoints at `speed`.

    leave=False: it runs until at least budget_s. leave=True: it ends just outside the frame exactly at
    budget_s (the waypoints it can afford within speed * budget_s, then straight out through the nearest
    border; times are stretched to end at budget_s, so a short window may move faster or slower than `speed`).
    Returns [(t, centre)], times increasing from 0."""
    points, used = [start], 0.0
    if not leave:
        t, out = 0.0, [(0.0, start)]
        while t < budget_s:
            p = _inner_point(rng, half, w, h)
            t += max(float(np.linalg.norm(p - out[-1][1])), 1.0) / speed
            out.append((t, p))
        return out
    length = speed * budget_s
    while True:
        for _ in range(_WALK_TRIES):
            p = _inner_point(rng, half, w, h)
            d = float(np.linalg.norm(p - points[-1]))
            if used + d + _exit(p, half, w, h)[1] <= length:
                points.append(p)
                used += d
                break
        else:
            break
    q, d = _exit(points[-1], half, w, h)
    points.append(q)
    used += max(d, 1e-6)
    cum = np.concatenate([[0.0], np.cumsum([np.linalg.norm(b - a) for a, b in zip(points[:-1], points[1:], strict=True)])])
    return [(float(c / cum[-1] * budget_s), p) for c, p in zip(cum, points, strict=True)]


def _anchor_point(rng: np.random.Generator, half: tuple[float, float], w: int, h: int, reach_px: float) -> np.ndarray:
    """An in-view centre from which the frame's border is at most `reach_px` away (a short window's object
    only comes in as far as it can get out again); at least half of the shape shows there."""
    for _ in range(4 * _WALK_TRIES):
        p = _inner_point(rng, half, w, h)
        if _exit(p, half, w, h)[1] <= reach_px:
            return p
    # just inside one border: the shape's centre on the border line, half of it in view
    side = int(rng.integers(4))
    x, y = rng.uniform(half[0], w - half[0]), rng.uniform(half[1], h - half[1])
    return np.array([(0.0, float(w), x, x)[side], (y, y, 0.0, float(h))[side]])


def _segment(rng: np.random.Generator, a: float, b: float, duration: float, speed: float, half: tuple[float, float],
             w: int, h: int, anchor: tuple[float, np.ndarray] | None) -> tuple[Keyframe, ...]:
    """Keyframes of one stay in the scene over [a, b]: through `anchor` (t, centre) or a random one, entering
    at a when a > 0 and leaving at b when b < duration (a walk backwards in time from the anchor is an entry)."""
    if anchor is None:      # in the middle half of the stay, so that it has time to come in and get out
        t0 = float(rng.uniform(a + 0.25 * (b - a), b - 0.25 * (b - a)))
        reach = speed * min(t0 - a if a > 0 else math.inf, b - t0 if b < duration else math.inf)
        anchor = (t0, _anchor_point(rng, half, w, h, reach) if math.isfinite(reach) else _inner_point(rng, half, w, h))
    t0, p0 = anchor
    after = _walk(rng, p0, b - t0, speed, half, w, h, leave=b < duration)
    before = _walk(rng, p0, t0 - a, speed, half, w, h, leave=a > 0)
    keys = [(t0 - t, p) for t, p in reversed(before[1:])] + [(t0 + t, p) for t, p in after]
    return tuple((float(t), float(p[0]), float(p[1])) for t, p in keys)


def _windows(rng: np.random.Generator, role: str, duration: float, config: SceneConfig,
             countable: bool) -> list[tuple[float, float]]:
    """The times [a, b] an object of `role` is in the scene. countable: every window at least COUNTABLE_FRACTION
    of the clip (see `seen_when_sampled`)."""
    lo = max(config.span_fraction_range[0], config.min_span_s / duration, COUNTABLE_FRACTION if countable else 0.0)
    lo = min(lo, config.span_fraction_range[1])
    if role == "stay":
        return [(0.0, duration)]
    if role == "window":
        length = _log_uniform(rng, lo, config.span_fraction_range[1]) * duration
        a = float(rng.uniform(0.0, duration - length))
        return [(a, a + length)]
    # return: in view from the start for f1, gone for at least a tenth of the clip, back for the last f2
    # (in a clip too short for two windows of min_span_s, as long as that rule allows)
    hi = min(RETURN_MAX_FRACTION, config.span_fraction_range[1])
    lo = min(lo, hi)
    f1, f2 = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    return [(0.0, f1 * duration), ((1.0 - f2) * duration, duration)]


def sample_clip_spec(rng: np.random.Generator, config: SceneConfig, num_objects: int | None = None,
                     countable: bool | None = None) -> ClipSpec:
    """Draw one scene. Only `rng`, `config` and the two optional choices decide it (`make_clip` draws those
    once per clip, so that redrawing an unusable scene does not skew the object count or the count answers).

    Each object gets a role (ROLES): at least two objects of a clip are in view at its start (stay or return:
    the tracking queries and their swapped twins are prompted there) and at least one is not in view all the
    time (window or return: the temporal queries)."""
    w, h = config.width, config.height
    fps = int(rng.integers(config.fps_range[0], config.fps_range[1] + 1))
    lo_t, hi_t = (math.ceil(config.duration_range_s[0] * fps), math.floor(config.duration_range_s[1] * fps))
    num_frames = int(rng.integers(lo_t, max(lo_t, hi_t) + 1))
    duration = num_frames / fps
    n = int(rng.integers(config.num_objects_range[0], config.num_objects_range[1] + 1)) if num_objects is None \
        else num_objects
    combos = rng.choice(len(CATEGORIES), size=n, replace=False)
    depth = rng.permutation(n)
    p_stay = 1.0 - config.p_window - config.p_return
    roles = [ROLES[int(i)] for i in rng.choice(3, size=n, p=[p_stay, config.p_window, config.p_return])]
    for k in range(n):            # at least min(2, n) objects in view at the start
        if sum(r != "window" for r in roles) >= min(2, n):
            break
        if roles[k] == "window":
            roles[k] = "return"
    if all(r == "stay" for r in roles):
        roles[int(rng.integers(n))] = "return"
    sizes = [float(rng.uniform(*config.size_range_px)) for _ in range(n)]
    speeds = [float(rng.uniform(*config.speed_range_px_s)) for _ in range(n)]
    rgbs = [tuple(int(v) for v in np.clip(np.array(RGB[CATEGORIES[int(c)][0]]) + rng.integers(-20, 21, 3), 0, 255))
            for c in combos]
    countable = bool(rng.random() < P_COUNT) if countable is None else countable
    windows = [_windows(rng, roles[k], duration, config, countable) for k in range(n)]
    halves = [ObjectSpec(k, *CATEGORIES[int(combos[k])], sizes[k], rgbs[k], 0, roles[k], ()).half_extent
              for k in range(n)]
    anchors: dict[tuple[int, int], tuple[float, np.ndarray]] = {}
    if n >= 2 and rng.random() < config.p_crossing:
        # two objects in the scene at time tm meet near point p, so the back one passes behind the front one
        tm = float(rng.uniform(0.25, 0.75)) * duration
        inside = {k: j for k in range(n) for j, (a, b) in enumerate(windows[k]) if a + 0.3 < tm < b - 0.3}
        if len(inside) >= 2:
            pad = config.size_range_px[1] / 2
            p = np.array([rng.uniform(pad, w - pad), rng.uniform(pad, h - pad)])
            pair = [int(k) for k in rng.choice(sorted(inside), size=2, replace=False)]
            offset = rng.uniform(-0.35, 0.35, 2) * min(sizes[pair[0]], sizes[pair[1]])
            for k, target in ((pair[0], p), (pair[1], p + offset)):
                anchors[(k, inside[k])] = (tm, np.clip(target, halves[k], (w - halves[k][0], h - halves[k][1])))
    objects = []
    for k in range(n):
        colour, shape = CATEGORIES[int(combos[k])]
        segments = tuple(_segment(rng, a, b, duration, speeds[k], halves[k], w, h, anchors.get((k, j)))
                         for j, (a, b) in enumerate(windows[k]))
        objects.append(ObjectSpec(object_id=k, colour=colour, shape=shape, size_px=sizes[k], rgb=rgbs[k],
                                  z=int(depth[k]), role=roles[k], segments=segments))
    noise = rng.random() < config.p_noise_background
    background_rgb = tuple(int(v) for v in rng.integers(0, 41, 3))
    return ClipSpec(width=w, height=h, fps=fps, num_frames=num_frames, background="noise" if noise else "plain",
                    background_rgb=background_rgb, background_seed=int(rng.integers(0, 2**31 - 1)),
                    objects=tuple(objects), countable=countable)


def object_centres(obj: ObjectSpec, fps: float, num_frames: int) -> np.ndarray:
    """float64 [T, 2]: the centre (x, y) px in every frame along its segments; NaN where it is not in the scene."""
    t = np.arange(num_frames) / fps
    out = np.full((num_frames, 2), np.nan)
    for seg in obj.segments:
        keys = np.array(seg, dtype=np.float64)                           # (K, 3)
        inside = (t >= keys[0, 0]) & (t <= keys[-1, 0])
        for j in range(2):
            out[inside, j] = np.interp(t[inside], keys[:, 0], keys[:, j + 1])
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
    if not math.isnan(cx):
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
            if math.isnan(cx):
                continue
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


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a bool [T] array."""
    v = np.concatenate([[0], np.asarray(flags, np.int8), [0]])
    edges = np.flatnonzero(np.diff(v))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def well_visible(clip: Clip, k: int) -> np.ndarray:
    """bool [T]: object k shows at least half of its largest visible area (not a sliver, not mostly hidden)."""
    area = clip.areas[:, k]
    return (area >= 0.5 * area.max()) & (area > 0)


def seen_when_sampled(clip: Clip, k: int) -> bool:
    """Object k is well visible through one run of at least an eighth of the clip plus two frames, so any 8 or
    more frames spread evenly over the clip show it: the conversation questions ask only about such objects."""
    return _longest_run(well_visible(clip, k)) >= clip.num_frames / 8 + 2


def _conversation_kinds(clip: Clip) -> dict[str, list[int]]:
    """The conversation questions the clip can answer unambiguously, with the objects each may ask about."""
    objs, n = clip.spec.objects, len(clip.spec.objects)
    seen = [k for k in range(n) if seen_when_sampled(clip, k)]
    kinds = {"count": list(range(n)) if clip.spec.countable and len(seen) == n else [],
             "colour": [k for k in seen if sum(o.shape == objs[k].shape for o in objs) == 1],
             "shape": [k for k in seen if sum(o.colour == objs[k].colour for o in objs) == 1]}
    return {kind: ks for kind, ks in kinds.items() if ks}


def temporal_objects(clip: Clip, config: SceneConfig) -> list[int]:
    """Objects a temporal query may ask about: those that leave the frame (role window or return; not an object
    that stays and is only hidden for a moment), labelled by QVHighlights' rule."""
    return [k for k in range(len(clip.spec.objects)) if clip.spec.objects[k].role != "stay"
            and not clip.visible[:, k].all() and qvhighlights_clip_labels(clip.spans[k], clip.duration_s, config.qvh_clip_length_s)[0]]


def track_objects(clip: Clip) -> list[int]:
    """Objects a tracking query may ask about: well visible on frame 0, where the tracker is prompted."""
    return [k for k in range(len(clip.spec.objects)) if well_visible(clip, k)[0]]


def make_queries(clip: Clip, clip_index: int, rng: np.random.Generator, config: SceneConfig) -> list[Query]:
    """`config.queries_per_task` queries of each task, in TASKS order, about the rendered clip.

    The queries of one task go through the clip's objects in a random order, so a clip's several queries ask
    about different objects (as long as there are enough): tracking about objects well visible on frame 0,
    region about any object on a frame where it is well visible (and another object too, when there is one),
    temporal about objects that are not in view all the time, and the conversation question (count, colour
    or shape, whichever the clip can answer unambiguously) about objects that any 8 even samples show."""
    spec, n = clip.spec, len(clip.spec.objects)
    objs = spec.objects
    temporal_ok, first, kinds = temporal_objects(clip, config), track_objects(clip), _conversation_kinds(clip)
    assert temporal_ok and first and kinds, "make_clip only keeps clips that can answer every task"
    out: list[Query] = []

    def add(task: str, question: str, answer: str, **kw) -> None:
        out.append(Query(qid=clip_index * QUERIES_PER_CLIP_MAX + len(out), vid=clip.name, task=task,
                         route=ROUTES[task], question=question, answer=answer, **kw))

    order = {task: [int(k) for k in rng.permutation(ks)] for task, ks in
             (("track", first), ("region", list(range(n))), ("temporal", temporal_ok))}
    good = [well_visible(clip, k) for k in range(n)]
    for j in range(config.queries_per_task):
        k = order["track"][j % len(first)]
        add("track", f"track the {objs[k].name}", f"Tracking the {objs[k].name}.", object_id=k)

        k = order["region"][j % n]
        frames = np.flatnonzero(good[k])
        shared = frames[np.any([good[i][frames] for i in range(n) if i != k], axis=0)] if n > 1 else frames[:0]
        frames = shared if len(shared) else frames
        t = int(frames[rng.integers(len(frames))])
        add("region", f"where is the {objs[k].name}?", f"The {objs[k].name} is here.", object_id=k, frame=t,
            box=clip.box(t, k))

        k = order["temporal"][j % len(temporal_ok)]
        spans = tuple(clip.spans[k])
        add("temporal", f"when does the {objs[k].name} appear?", temporal_answer(objs[k].name, list(spans)),
            object_id=k, spans=spans)

        names = sorted(kinds)     # a clip drawn for counting asks the count first
        kind = "count" if j == 0 and "count" in kinds else names[int(rng.integers(len(names)))]
        if kind == "count":
            word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
            add("conversation", "how many shapes are there?", word)
        elif kind == "colour":
            k = int(kinds["colour"][rng.integers(len(kinds["colour"]))])
            add("conversation", f"what colour is the {objs[k].shape}?", objs[k].colour, object_id=k)
        else:
            k = int(kinds["shape"][rng.integers(len(kinds["shape"]))])
            add("conversation", f"what shape is the {objs[k].colour} object?", objs[k].shape, object_id=k)
    return out


def clip_name(index: int) -> str:
    return f"clip_{index:05d}"


def _usable(clip: Clip, config: SceneConfig) -> bool:
    frames_needed = math.ceil(config.min_visible_s * clip.fps - 1e-9)
    if (clip.areas > 0).sum(axis=0).min() < frames_needed:
        return False
    kinds = _conversation_kinds(clip)
    return bool(temporal_objects(clip, config) and track_objects(clip) and kinds
                and (not clip.spec.countable or "count" in kinds))


def make_clip(index: int, seed: int, config: SceneConfig | None = None) -> Clip:
    """Clip `index` of the stream `seed`: scene, frames, ground truth and queries.

    Depends only on (seed, index, config). Scenes where an object shows for less than
    `config.min_visible_s`, or that cannot answer every task (`_usable`), are redrawn (from the same random
    stream, so still deterministic).
    """
    config = config or SceneConfig()
    if not (isinstance(seed, int) and seed >= 0) or not (isinstance(index, int) and index >= 0):
        raise ConfigError(f"seed and clip index must be integers >= 0, got seed={seed!r}, index={index!r}")
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(config.num_objects_range[0], config.num_objects_range[1] + 1))
    countable = bool(rng.random() < P_COUNT)
    for _ in range(_MAX_ATTEMPTS):
        clip = render_clip(sample_clip_spec(rng, config, n, countable), clip_name(index))
        if _usable(clip, config):
            clip.queries = make_queries(clip, index, rng, config)
            return clip
    raise ConfigError(f"no usable scene in {_MAX_ATTEMPTS} draws for seed {seed}, clip {index}: every object "
                      f"must show for {config.min_visible_s} s and the clip must answer every task; lower min_visible_s or "
                      "widen the ranges")


def iter_clips(seed: int, config: SceneConfig | None = None, start: int = 0, stop: int | None = None):
    """Yield make_clip(i, seed, config) for i = start, start + 1, ... (forever when stop is None)."""
    i = start
    while stop is None or i < stop:
        yield make_clip(i, seed, config)
        i += 1

