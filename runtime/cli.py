"""`tpo-run`: stream a video source into the exported graphs; print the answer, events and latency summary.

    tpo-run --source clip.mp4 --query "track the red circle" [--artifacts DIR] [--backend onnxruntime]
            [--jsonl events.jsonl] [--out annotated.mp4] [--qvhighlights preds.jsonl] [--stride N] [--max-frames N]

Without --artifacts it uses the export of the embedded tiny model in the cache folder
($TPO_ARTIFACTS_CACHE or ~/.cache/tpo-edge/artifacts/tiny-fp16), made on first use by running `tpo-export`
in a subprocess (the runtime itself never imports the exporter or torch). A user's mistake is one line on
stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tpo.errors import TPOError

from .backend import backend_names

EXIT_USAGE = 2


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tpo-run", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, help="a tpo-export output folder (default: the embedded tiny export)")
    p.add_argument("--source", required=True,
                   help="video file, camera index, rtsp/http URL, GStreamer pipeline or image folder")
    p.add_argument("--query", required=True, help='the question, e.g. "track the red circle"')
    p.add_argument("--backend", default="onnxruntime", help=f"one of {', '.join(backend_names())}")
    p.add_argument("--jsonl", type=Path, help="write every event as one JSON line")
    p.add_argument("--qvhighlights", type=Path, help="write temporal answers in the QVHighlights format")
    p.add_argument("--out", type=Path, help="annotated video (.mp4 or .avi)")
    p.add_argument("--stride", type=int, default=1, help="files: process every Nth frame")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="print only the answer and the summary")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .session import open as open_session
    from .sinks import AnnotatedVideoSink, JsonlSink, QVHighlightsSink
    from .sources import open_source
    from .stream import stream

    sinks = []
    try:
        if args.stride < 1:
            raise TPOError(f"--stride {args.stride}: must be >= 1")
        if args.max_frames is not None and args.max_frames < 1:
            raise TPOError(f"--max-frames {args.max_frames}: must be >= 1")
        artifacts = args.artifacts or ensure_default_artifacts(default_artifacts())
        session = open_session(artifacts, backend=args.backend)
        source = open_source(args.source, stride=args.stride, max_frames=args.max_frames)
        print(f"backend: {session.backend.description}, precision {session.manifest.precision}, "
              f"source: {source.name}", file=sys.stderr)
        print(session.frame_path.describe(), file=sys.stderr)
        jsonl = JsonlSink(args.jsonl) if args.jsonl else None
        qvh = QVHighlightsSink(args.qvhighlights, query=args.query, vid=str(args.source)) if args.qvhighlights else None
        video = None
        sinks = [s for s in (jsonl, qvh) if s is not None]
        held: tuple = (None, [])      # the frame being annotated and its events (one per tracked object)
        for frame, event in stream(session, source, args.query):
            if args.out is not None and video is None and frame is not None:
                video = AnnotatedVideoSink(args.out, source.fps or 30.0, frame.size_hw)
                sinks.append(video)
            with session.timings.timed("sink"):
                for sink in sinks:
                    sink.write_event(event)
            if video is not None and frame is not None:
                if held[0] is not None and held[0] is not frame:
                    with session.timings.timed("sink"):
                        video.write(*held)
                    held = (None, [])
                held = (frame, held[1] + [event])
            if event["type"] in ("answer", "summary", "temporal", "region", "source") or not args.quiet:
                if event["type"] == "track":
                    event = {k: v for k, v in event.items() if k != "mask_rle"}
                print(json.dumps(event))
        if video is not None and held[0] is not None:
            video.write(*held)
    except TPOError as e:
        print(f"tpo-run: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for sink in sinks:
            sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
