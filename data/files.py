"""Synthetic grounding data: the generator's public names (from `tpo.data.synthetic`) and its files.

In memory: `make_clip(index, seed, config) -> Clip` (see `tpo.data.synthetic`). As files:
`make_dataset(out_dir, clips, seed, config)` writes, and `load_dataset(dir)` reads back:

    DIR/videos/clip_00000.mp4            every frame at the clip's fps, mp4v (else avi MJPG, said loudly)
    DIR/annotations/coco.json            COCO-video: videos, images (= frames), 12 categories, one annotation
                                         per visible object per frame: bbox [x, y, w, h], area, RLE mask,
                                         track_id (dataset-wide), object_id (in clip), video_id, frame_id
    DIR/annotations/qvhighlights.jsonl   one line per temporal query, QVHighlights fields
    DIR/annotations/queries.jsonl        every query: qid, vid, task, route, question, answer, object_id,
                                         frame, box, spans
    DIR/annotations/clips.jsonl          per clip: file, fps, frames, size, the ClipSpec (renders the clip
                                         bit for bit), objects with visible spans and occluded frames
    DIR/meta.json                        seed, counts, spread statistics, generator version, codec

Annotation files and meta.json are byte-identical for the same (clips, seed, config) on any machine
with the same codec. The videos are lossy (mp4v/MJPG): ground truth comes from the annotations only.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tpo.errors import ConfigError, InputError, TPOError

from .synthetic import (
    CATEGORIES,
    GENERATOR_VERSION,
    ROLES,
    ROUTES,
    TASKS,
    Clip,
    ClipSpec,
    ObjectSpec,
    Query,
    SceneConfig,
    category_id,
    iter_clips,
    make_clip,
    make_queries,
    object_centres,
    object_footprint,
    qvhighlights_clip_labels,
    render_clip,
    render_labels,
    sample_clip_spec,
    seen_when_sampled,
    temporal_objects,
    track_objects,
    visible_spans,
    well_visible,
)

ANNOTATION_FILES = ("coco.json", "qvhighlights.jsonl", "queries.jsonl", "clips.jsonl")


@dataclass
class Dataset:
    """A dataset read back: its meta.json and its clips (ground truth from the annotation files)."""

    root: Path
    meta: dict
    clips: list[Clip]

    @property
    def queries(self) -> list[Query]:
        return [q for c in self.clips for q in c.queries]


def _open_writer(path_stem: Path, fps: int, size_wh: tuple[int, int], codec: str):
    import cv2

    ext = {"mp4v": ".mp4", "MJPG": ".avi"}[codec]
    path = path_stem.with_suffix(ext)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size_wh)
    if not writer.isOpened():
        writer.release()
        path.unlink(missing_ok=True)
        return None, path
    return writer, path


def write_video(path_stem: Path, frames: np.ndarray, fps: int, codec: str) -> Path:
    """Write uint8 [T, H, W, 3] RGB frames with `codec` ("mp4v" or "MJPG"); returns the file's path."""
    writer, path = _open_writer(path_stem, fps, (frames.shape[2], frames.shape[1]), codec)
    if writer is None:
        raise TPOError(f"{path}: OpenCV cannot open a {codec} video writer")
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))   # RGB -> BGR
    writer.release()
    return path


def choose_codec(probe_dir: Path) -> str:
    """"mp4v" when OpenCV can write it here, else "MJPG" (with a loud warning), else raise."""
    for codec in ("mp4v", "MJPG"):
        writer, path = _open_writer(probe_dir / ".codec_probe", 8, (32, 32), codec)
        if writer is not None:
            writer.release()
            path.unlink(missing_ok=True)
            if codec != "mp4v":
                msg = ("tpo-data: WARNING: OpenCV cannot write mp4v (.mp4) here; writing MJPG .avi files instead "
                       "(install an OpenCV build with FFmpeg for .mp4)")
                print(msg, file=sys.stderr)
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
            return codec
    raise TPOError("OpenCV can write neither mp4v nor MJPG video: install opencv-python-headless with FFmpeg")


def _rle_masks(labels_t: np.ndarray, ks: list[int]) -> list[dict]:
    """COCO RLE (counts as str) of the visible mask of each object k in one frame's label map."""
    from pycocotools import mask as mask_util

    stack = np.asfortranarray(np.stack([labels_t == k + 1 for k in ks], axis=-1).astype(np.uint8))  # [H, W, n]
    rles = mask_util.encode(stack)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def _prepare_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: folder exists and is not empty; choose another or pass --overwrite")
        if not (out / "meta.json").is_file():
            raise InputError(f"{out}: not a tpo-data dataset (no meta.json); refusing to overwrite it")
        for sub in ("videos", "annotations"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "meta.json").unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)


class _Annotations:
    """What make_dataset writes besides the videos, gathered clip by clip: the COCO/YouTube-VIS tracks, the
    QVHighlights, query and clip lines, and the counts and stats of meta.json."""

    def __init__(self, seed: int) -> None:
        self.coco = {
            "info": {"description": "tpo-edge synthetic grounding clips", "version": GENERATOR_VERSION, "seed": seed},
            "videos": [], "images": [], "annotations": [],
            "categories": [{"id": category_id(c, s), "name": f"{c} {s}", "colour": c, "shape": s,
                            "supercategory": "shape"} for c, s in CATEGORIES],
        }
        self.qvh_lines: list[dict] = []
        self.query_lines: list[dict] = []
        self.clip_lines: list[dict] = []
        self.per_task = dict.fromkeys(TASKS, 0)
        self.stats = {"clips_with_occlusion": 0, "objects": 0, "objects_hidden_for_a_while": 0,
                      "objects_that_leave_and_return": 0, "temporal_partial": 0, "temporal_multi_span": 0}
        self.image_id = self.ann_id = self.track_id = 0

    def add_clip(self, i: int, clip, video: Path, qvh_clip_length_s: float) -> None:
        first_track = self.track_id + 1
        self.track_id += len(clip.spec.objects)
        self._add_coco(i + 1, clip, video, first_track)
        self._add_clip_line(i, clip, video, first_track)
        self._add_queries(clip, qvh_clip_length_s)

    def _add_coco(self, vid_id: int, clip, video: Path, first_track: int) -> None:
        """The video, one image per frame and one annotation per visible object (mask as RLE)."""
        spec, coco = clip.spec, self.coco
        coco["videos"].append({"id": vid_id, "name": clip.name, "file_name": f"videos/{video.name}",
                               "width": spec.width, "height": spec.height, "fps": spec.fps,
                               "num_frames": spec.num_frames, "duration": spec.duration_s})
        for t in range(spec.num_frames):
            self.image_id += 1
            coco["images"].append({"id": self.image_id, "video_id": vid_id, "frame_id": t,
                                   "file_name": f"videos/{video.name}", "width": spec.width,
                                   "height": spec.height})
            ks = [int(k) for k in np.flatnonzero(clip.areas[t] > 0)]
            if not ks:
                continue
            for k, rle in zip(ks, _rle_masks(clip.labels[t], ks), strict=True):
                self.ann_id += 1
                x1, y1, x2, y2 = (int(v) for v in clip.boxes[t, k])
                o = spec.objects[k]
                coco["annotations"].append({
                    "id": self.ann_id, "image_id": self.image_id, "video_id": vid_id, "frame_id": t,
                    "category_id": category_id(o.colour, o.shape), "track_id": first_track + k, "object_id": k,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(clip.areas[t, k]), "segmentation": rle,
                    "iscrowd": 0, "occluded": bool(clip.occluded[t, k]),
                })

    def _add_clip_line(self, i: int, clip, video: Path, first_track: int) -> None:
        spec = clip.spec
        objects = []
        for k, o in enumerate(spec.objects):
            objects.append({"object_id": k, "track_id": first_track + k,
                            "category_id": category_id(o.colour, o.shape), "colour": o.colour, "shape": o.shape,
                            "role": o.role,
                            "spans": [list(s) for s in clip.spans[k]],
                            "occluded_frames": [int(t) for t in np.flatnonzero(clip.occluded[:, k])]})
            self.stats["objects"] += 1
            self.stats["objects_hidden_for_a_while"] += not clip.visible[:, k].all()
            self.stats["objects_that_leave_and_return"] += o.role == "return"
        self.stats["clips_with_occlusion"] += bool(clip.occluded.any())
        self.clip_lines.append({"vid": clip.name, "index": i, "video": f"videos/{video.name}", "fps": spec.fps,
                                "num_frames": spec.num_frames, "duration": spec.duration_s, "width": spec.width,
                                "height": spec.height, "objects": objects, "spec": spec.to_dict()})

    def _add_queries(self, clip, qvh_clip_length_s: float) -> None:
        """Every query; temporal ones also as QVHighlights lines (clip ids and saliency of its windows)."""
        spec = clip.spec
        for q in clip.queries:
            self.per_task[q.task] += 1
            self.query_lines.append(q.to_dict())
            if q.task != "temporal":
                continue
            ids, scores = qvhighlights_clip_labels(list(q.spans), spec.duration_s, qvh_clip_length_s)
            self.qvh_lines.append({"qid": q.qid, "query": q.question, "vid": q.vid, "duration": spec.duration_s,
                                   "relevant_windows": [list(s) for s in q.spans], "relevant_clip_ids": ids,
                                   "saliency_scores": scores})
            self.stats["temporal_partial"] += not clip.visible[:, q.object_id].all()
            self.stats["temporal_multi_span"] += len(q.spans) > 1

    def write(self, ann: Path) -> None:
        (ann / "coco.json").write_text(json.dumps(self.coco, separators=(",", ":")) + "\n")
        for name, lines in (("qvhighlights.jsonl", self.qvh_lines), ("queries.jsonl", self.query_lines),
                            ("clips.jsonl", self.clip_lines)):
            (ann / name).write_text("".join(json.dumps(line) + "\n" for line in lines))


def make_dataset(out_dir: str | Path, clips: int, seed: int, config: SceneConfig | None = None,
                 overwrite: bool = False, progress: bool = False) -> dict:
    """Write clips 0..clips-1 of stream `seed` (see module docstring); returns the meta.json content."""
    config = config or SceneConfig()
    if not (isinstance(clips, int) and clips >= 1):
        raise ConfigError(f"clips must be an integer >= 1, got {clips!r}")
    out = Path(out_dir)
    _prepare_dir(out, overwrite)
    codec = choose_codec(out / "videos")
    annotations = _Annotations(seed)
    indices = range(clips)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="clips", unit="clip")
    for i in indices:
        clip = make_clip(i, seed, config)
        video = write_video(out / "videos" / clip.name, clip.frames, clip.spec.fps, codec)
        annotations.add_clip(i, clip, video, config.qvh_clip_length_s)
    annotations.write(out / "annotations")
    meta = {
        "generator": "tpo.data.files", "version": GENERATOR_VERSION, "seed": seed, "clips": clips,
        "video_codec": codec, "video_ext": ".mp4" if codec == "mp4v" else ".avi",
        "qvhighlights_clip_length_s": config.qvh_clip_length_s,
        "counts": {"frames": len(annotations.coco["images"]), "annotations": len(annotations.coco["annotations"]),
                   "queries": len(annotations.query_lines), "queries_per_task": annotations.per_task},
        "stats": annotations.stats, "config": asdict(config),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _read_json(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: missing; is this a folder written by `tpo-data make`?")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


def read_meta(root: str | Path) -> dict:
    """The meta.json of a dataset folder."""
    return _read_json(Path(root) / "meta.json")


def read_video_frames(path: Path, num_frames: int) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB decoded with OpenCV; the file must hold exactly num_frames frames."""
    import cv2

    if not path.is_file():
        raise InputError(f"{path}: video file missing")
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1])
    cap.release()
    if len(frames) != num_frames:
        raise InputError(f"{path}: decoded {len(frames)} frames, the annotations say {num_frames}")
    return np.ascontiguousarray(np.stack(frames))


def load_dataset(root: str | Path, frames: str = "video") -> Dataset:
    """Read a dataset written by `make_dataset`.

    Ground truth (masks, boxes, spans, queries) comes from the annotation files. `frames`:
    "video" decodes the video files with OpenCV (lossy codecs: close to, not equal to, the rendered
    frames); "render" re-renders them from the stored ClipSpec (exact; needs the same generator version);
    "none" leaves Clip.frames as None.
    """
    from pycocotools import mask as mask_util

    root = Path(root)
    if frames not in ("video", "render", "none"):
        raise InputError(f"frames={frames!r}: choose 'video', 'render' or 'none'")
    meta = read_meta(root)
    if frames == "render" and meta.get("version") != GENERATOR_VERSION:
        raise InputError(f"{root}: written by generator version {meta.get('version')}, this is "
                         f"{GENERATOR_VERSION}; re-rendering would differ, use frames='video'")
    ann = root / "annotations"
    coco = _read_json(ann / "coco.json")
    clip_lines = _read_json(ann / "clips.jsonl")
    queries: dict[str, list[Query]] = {}
    for d in _read_json(ann / "queries.jsonl"):
        queries.setdefault(d["vid"], []).append(Query.from_dict(d))
    video_ids = {v["name"]: v["id"] for v in coco["videos"]}
    anns_by_video: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        anns_by_video.setdefault(a["video_id"], []).append(a)
    clips = []
    for c in clip_lines:
        spec = ClipSpec.from_dict(c["spec"])
        num, n = spec.num_frames, len(spec.objects)
        labels = np.zeros((num, spec.height, spec.width), np.uint8)
        boxes = np.full((num, n, 4), np.nan, np.float32)
        areas = np.zeros((num, n), np.int64)
        occluded = np.zeros((num, n), bool)
        for a in anns_by_video.get(video_ids[c["vid"]], []):
            t, k = a["frame_id"], a["object_id"]
            with warnings.catch_warnings():  # pycocotools 2.0.x under numpy 2: harmless copy-keyword notice
                warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                m = mask_util.decode(a["segmentation"]).astype(bool)
            labels[t][m] = k + 1
            x, y, w, h = a["bbox"]
            boxes[t, k] = (x, y, x + w, y + h)
            areas[t, k] = a["area"]
        for o in c["objects"]:
            occluded[o["occluded_frames"], o["object_id"]] = True
        spans = [[tuple(s) for s in o["spans"]] for o in c["objects"]]
        if frames == "video":
            pixels = read_video_frames(root / c["video"], num)
        elif frames == "render":
            pixels = render_clip(spec, c["vid"]).frames
        else:
            pixels = None
        clips.append(Clip(name=c["vid"], spec=spec, frames=pixels, labels=labels, boxes=boxes, areas=areas,
                          occluded=occluded, spans=spans, queries=queries.get(c["vid"], [])))
    return Dataset(root=root, meta=meta, clips=clips)


__all__ = [
    "CATEGORIES", "GENERATOR_VERSION", "ROLES", "ROUTES", "TASKS", "Clip", "ClipSpec", "Dataset", "ObjectSpec", "Query",
    "SceneConfig", "category_id", "iter_clips", "load_dataset", "make_clip", "make_dataset", "make_queries",
    "object_centres", "object_footprint", "qvhighlights_clip_labels", "read_meta", "read_video_frames",
    "render_clip", "render_labels", "sample_clip_spec", "seen_when_sampled", "temporal_objects", "track_objects",
    "visible_spans", "well_visible", "write_video",
]
