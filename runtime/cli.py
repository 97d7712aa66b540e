"""`tpo-run`: stream a video source through the exported graphs; print the answer, events and a summary.

    tpo-run --source clip.mp4 --query "track the red circle" [--artifacts DIR] [--backend onnxruntime]
            [--device cpu|cuda[:N]] [--conf 0.5] [--jsonl events.jsonl] [--out annotated.mp4]
            [--qvhighlights preds.jsonl] [--question-frames N] [--stride N] [--max-frames N] [--quiet]

Every argument is checked before anything loads. Without --artifacts it uses the export of the embedded tiny
model in the cache folder ($TPO_ARTIFACTS_CACHE or ~/.cache/tpo-edge/artifacts/tiny-fp16), made on first use by
running `tpo-export` in a subprocess (the runtime itself never imports the exporter or torch). stdout: one
JSON line per event (track events without their masks), or with --quiet only the answer and the summary;
stderr: what runs, and a progress line on long sources. A user's mistake is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tpo.errors import TPOError

EXIT_USAGE = 2
PROGRESS_EVERY_S = 2.0


class UsageError(TPOError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str):            # one line, exit 2 (argparse would print the usage too)
        raise UsageError(message)


def default_artifacts() -> Path:
    root = os.environ.get("TPO_ARTIFACTS_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tpo-edge" / "artifacts"
    return base / "tiny-fp16"


def ensure_default_artifacts(path: Path) -> Path:
    if (path / "manifest.json").is_file():
        return path
    exe = shutil.which("tpo-export")
    cmd = [exe] if exe else [sys.executable, "-m", "tpo.export.cli"]
    print(f"tpo-run: no --artifacts; exporting the embedded tiny model to {path} (first use, about a minute)",
          file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*cmd, "--precision", "fp16", "--out", str(path), "--force", "--no-progress"],
                          stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise TPOError(f"tpo-export failed (exit {done.returncode}); export by hand and pass --artifacts")
    return path


def build_parser() -> Parser:
    from .backend import backend_names

    p = Parser(prog="tpo-run", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, help="a tpo-export output folder (default: the embedded tiny export)")
    p.add_argument("--source", required=True,
                   help="video file, camera index, rtsp/http URL, GStreamer pipeline or image folder")
    p.add_argument("--query", required=True, help='the question, e.g. "track the red circle"')
    p.add_argument("--backend", default="onnxruntime", choices=backend_names(), help="inference engine")
    p.add_argument("--device", default=None,
                   help="cpu, or cuda / cuda:N (onnxruntime: its CUDA provider on GPU N; tensorrt: GPU N). "
                        "Default: cpu for onnxruntime and torch, cuda:0 for tensorrt")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of the engine (default: all)")
    p.add_argument("--conf", type=float, default=0.5,
                   help="presence probability below which a tracked object is reported absent (box null, no mask); "
                        "0.5 is SAM2's own rule")
    p.add_argument("--jsonl", type=Path, help="write every event as one JSON line")
    p.add_argument("--qvhighlights", type=Path, help="write the temporal answer as a QVHighlights prediction line")
    p.add_argument("--qid", default=0, type=lambda v: int(v) if v.lstrip("-").isdigit() else v,
                   help="the query id in the QVHighlights line (an integer, as QVHighlights uses, or a string)")
    p.add_argument("--vid", default=None, help="the video id in the QVHighlights line (default: --source)")
    p.add_argument("--out", type=Path, help="annotated video (.mp4 or .avi): every processed frame")
    p.add_argument("--question-frames", type=int, default=None,
                   help="the question is asked about the first N frames (default: the vision encoder's frame "
                        "count); a file's frame count asks about the whole file, sampled as tpo-eval does")
    p.add_argument("--stride", type=int, default=1, help="files: process every Nth frame (the others are skipped)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="stop after this many frames have been delivered (the question's frames included)")
    p.add_argument("--no-masks", action="store_true", help="leave the COCO RLE masks out of track events")
    p.add_argument("--quiet", action="store_true", help="print only the answer and the summary; no progress")
    return p


def parse_device(device: str | None, backend: str) -> dict:
    """--device -> the backend's keyword arguments, or UsageError."""
    if device is None:
        return {}
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UsageError(f"--device {device!r}: use cpu, cuda or cuda:N")
    ordinal = int(index or 0)
    if backend == "onnxruntime":
        providers = ["CPUExecutionProvider"] if kind == "cpu" else ["CUDAExecutionProvider"]
        return {"providers": providers, "device_id": ordinal}
    if backend == "tensorrt":
        if kind == "cpu":
            raise UsageError("--device cpu: the tensorrt backend runs on a GPU (use cuda[:N])")
        return {"device": ordinal}
    return {"device": device}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parsed and checked arguments (nothing loaded yet), or UsageError naming the bad one."""
    args = build_parser().parse_args(argv)
    if not args.query.strip():
        raise UsageError("--query: empty; ask something, e.g. 'track the red circle'")
    if args.question_frames is not None and args.question_frames < 1:
        raise UsageError(f"--question-frames {args.question_frames}: must be >= 1")
    if args.stride < 1:
        raise UsageError(f"--stride {args.stride}: must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: must be >= 1")
    if not 0.0 <= args.conf <= 1.0:
        raise UsageError(f"--conf {args.conf}: must be a probability in [0, 1]")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be >= 1")
    if args.out is not None:
        from .sinks import check_video_path

        check_video_path(args.out)
    args.backend_kwargs = parse_device(args.device, args.backend)
    if args.threads is not None:
        args.backend_kwargs["threads"] = args.threads
    if args.artifacts is not None and not (args.artifacts / "manifest.json").is_file():
        raise UsageError(f"--artifacts {args.artifacts}: no manifest.json there (make one with tpo-export)")
    return args


class Progress:
    """A line on stderr every PROGRESS_EVERY_S seconds: frame, share of a file done, frames per second."""

    def __init__(self, total: int | None, enabled: bool):
        self.total, self.enabled = total, enabled
        self.start = self.last = time.perf_counter()
        self.shown = False

    def update(self, frame_index: int, processed: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        done = f"/{self.total} ({100 * (frame_index + 1) / self.total:.0f}%)" if self.total else ""
        print(f"tpo-run: frame {frame_index + 1}{done}, {processed / (now - self.start):.1f} fps",
              file=sys.stderr, flush=True)


def printable(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "mask_rle"}


def run(args: argparse.Namespace) -> int:
    from .session import open as open_session
    from .sinks import AnnotatedVideoSink, JsonlSink, QVHighlightsSink, Sinks
    from .sources import open_source
    from .stream import Stream
    from .tasks import StreamOptions

    options = StreamOptions(conf=args.conf, with_masks=not args.no_masks, question_frames=args.question_frames)
    artifacts = args.artifacts or ensure_default_artifacts(default_artifacts())
    session = open_session(artifacts, backend=args.backend, **args.backend_kwargs)
    source = open_source(args.source, stride=args.stride, max_frames=args.max_frames)
    print(f"backend: {session.backend.description}, precision {session.manifest.precision}, "
          f"source: {source.name}", file=sys.stderr)
    print(session.frame_path.describe(), file=sys.stderr)
    stream = Stream(session, source, args.query, options)
    sinks = Sinks()
    if args.jsonl:
        sinks.sinks.append(JsonlSink(args.jsonl))
    if args.qvhighlights:
        sinks.sinks.append(QVHighlightsSink(args.qvhighlights, qid=args.qid, query=args.query,
                                            vid=args.vid or str(args.source)))
    if args.out:
        fps = (source.fps or 30.0) / args.stride
        sinks.sinks.append(AnnotatedVideoSink(args.out, fps, duration_s=source.duration_s))
    progress = Progress(source.frame_count, enabled=not args.quiet)
    with sinks:
        for result in stream:
            with stream.timings.timed("sink"):
                sinks.write(result)
            for event in result.events:
                if not args.quiet or event["type"] in ("answer", "summary"):
                    print(json.dumps(printable(event)), flush=event["type"] != "track")
            if result.frame is not None:
                progress.update(result.frame.index, stream.processed)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except TPOError as e:
        print(f"tpo-run: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
