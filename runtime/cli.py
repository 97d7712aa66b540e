"""`tpo-run`: stream a video source through the exported graphs; print the answer, events and a summary.

    tpo-run --source clip.mp4 --query "track the red circle" [--control FILE|-] [--artifacts DIR]
            [--backend onnxruntime] [--device cpu|cuda[:N]] [--conf 0.5] [--jsonl events.jsonl] [--out annotated.mp4]
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
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tpo.errors import TPOError, one_line_errors

if TYPE_CHECKING:
    from .sinks import Sinks

EXIT_USAGE = 2
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
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
    p.add_argument("--query", default=None,
                   help='the question the stream opens with, e.g. "track the red circle" (optional with --control)')
    p.add_argument("--control", default=None,
                   help='JSONL commands while streaming, from a file, a FIFO or - (stdin): {"ask": "..."}, '
                        '{"stop": <object id>}, {"follow": <object id>}, {"quit": true} (docs/runtime.md "Two loops")')
    p.add_argument("--follow", action="store_true",
                   help="hand every region answer to the tracker: its box prompts SAM2 and the object is tracked "
                        '("where is the red car?" then follow it)')
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
    p.add_argument("--force", action="store_true",
                   help="take over output files another running process has claimed (its lock file)")
    p.add_argument("--watchdog", type=float, default=5.0,
                   help="live sources: seconds without a frame before the source is restarted (0: off)")
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
    if args.query is None and args.control is None:
        raise UsageError("--query: missing; ask something, e.g. 'track the red circle' (or give --control)")
    if args.query is not None and not args.query.strip():
        raise UsageError("--query: empty; ask something, e.g. 'track the red circle'")
    if args.qvhighlights is not None and args.query is None:
        raise UsageError("--qvhighlights: needs --query (the prediction line is the answer to that question)")
    if args.control not in (None, "-") and not Path(args.control).exists():
        raise UsageError(f"--control {args.control}: no such file or FIFO")
    if args.question_frames is not None and args.question_frames < 1:
        raise UsageError(f"--question-frames {args.question_frames}: must be >= 1")
    if args.stride < 1:
        raise UsageError(f"--stride {args.stride}: must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: must be >= 1")
    if not 0.0 <= args.conf <= 1.0:
        raise UsageError(f"--conf {args.conf}: must be a probability in [0, 1]")
    if args.watchdog < 0:
        raise UsageError(f"--watchdog {args.watchdog}: must be >= 0 seconds (0 turns it off)")
    args.watchdog = args.watchdog or None
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be >= 1")
    if args.out is not None:
        from .sinks import check_video_path

        check_video_path(args.out)
    from .outputs import check_path

    for path in (args.jsonl, args.qvhighlights, args.out):
        if path is not None:
            check_path(path, args.force)
    outputs = [str(p) for p in (args.jsonl, args.qvhighlights, args.out) if p is not None and str(p) != "-"]
    if len(set(outputs)) < len(outputs):
        raise UsageError(f"two outputs on one path ({', '.join(outputs)}): give each its own file")
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


class StopRequest:
    """SIGINT / SIGTERM while streaming, as a flag the loop reads between frames. An exception raised by the
    signal handler could land anywhere: inside a lock's acquire-and-enter (the lock stays held and the closing
    summary deadlocks on it) or half-way through a sink's write. A second SIGINT raises KeyboardInterrupt at
    once, for a loop stuck in a read (a live source's watchdog ends such a read within its setting anyway)."""

    REASONS = {signal.SIGINT: ("interrupted (SIGINT)", EXIT_SIGINT), signal.SIGTERM: ("terminated (SIGTERM)", EXIT_SIGTERM)}

    def __init__(self) -> None:
        self.reason: str | None = None
        self.code = 0

    def __call__(self, signum, frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason, self.code = self.REASONS[signal.Signals(signum)]

    def __enter__(self) -> StopRequest:
        self._previous = {sig: signal.signal(sig, self) for sig in self.REASONS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def open_sinks(args: argparse.Namespace, source) -> Sinks:
    """Every output the arguments ask for, each claimed now (a second writer is refused before anything runs)."""
    from .sinks import AnnotatedVideoSink, JsonlSink, QVHighlightsSink, Sinks

    sinks = Sinks()
    try:
        if args.jsonl:
            sinks.sinks.append(JsonlSink(args.jsonl, force=args.force))
        if args.qvhighlights:
            sinks.sinks.append(QVHighlightsSink(args.qvhighlights, qid=args.qid, query=args.query,
                                                vid=args.vid or str(args.source), force=args.force))
        if args.out:
            fps = (source.fps or 30.0) / args.stride
            sinks.sinks.append(AnnotatedVideoSink(args.out, fps, duration_s=source.duration_s, force=args.force))
    except BaseException:
        for sink in sinks.sinks:       # release the claims already taken: nothing was written yet
            sink.discard()
        raise
    return sinks


def stream_into(stream, sinks, args: argparse.Namespace, source, stop: StopRequest) -> None:
    """The loop: every result to the sinks, its events printed, a progress line now and then; it returns
    early, between two results, when a signal asked it to stop."""
    progress = Progress(source.frame_count, enabled=not args.quiet)
    for result in stream:
        with stream.timings.timed("sink"):
            sinks.write(result)
        for event in result.events:
            if not args.quiet or event["type"] in ("answer", "summary"):
                print(json.dumps(printable(event)), flush=event["type"] != "track")
        if result.frame is not None:
            progress.update(result.frame.index, stream.processed)
        if stop.reason is not None:
            return


def finish_early(stream, sinks, reason: str, error: str | None = None) -> None:
    """An interrupted or failed run: the summary says so (`"complete": false` and why), every sink is closed
    and its file kept under a partial name, and the summary is printed. A sink that already failed with
    `error` fails again here: that is not said twice."""
    closing = stream.abort(reason)
    said = {error} if error else set()
    for step in (lambda: sinks.write(closing), lambda: sinks.close(partial=True)):
        try:
            step()
        except TPOError as e:
            if str(e) not in said:
                said.add(str(e))
                print(f"tpo-run: {e}", file=sys.stderr)
    print(json.dumps(printable(closing.events[-1])), flush=True)


def run(args: argparse.Namespace) -> int:
    from .session import open as open_session
    from .sources import open_source
    from .stream import Stream
    from .tasks import StreamOptions

    options = StreamOptions(conf=args.conf, with_masks=not args.no_masks, follow_regions=args.follow,
                            question_frames=args.question_frames)
    artifacts = args.artifacts or ensure_default_artifacts(default_artifacts())
    session = open_session(artifacts, backend=args.backend, **args.backend_kwargs)
    source = open_source(args.source, stride=args.stride, max_frames=args.max_frames,
                         watchdog_s=args.watchdog)
    print(f"backend: {session.backend.description}, precision {session.manifest.precision.value}, "
          f"source: {source.name}", file=sys.stderr)
    print(session.frame_path.describe(), file=sys.stderr)
    stream = Stream(session, source, args.query, options)
    try:
        if args.control is not None:          # before the sinks claim their files: a failure here leaves none
            from .control import ControlReader

            ControlReader(args.control, stream).start()
        sinks = open_sinks(args, source)
    except BaseException:
        source.close()
        raise
    with StopRequest() as stop:
        try:
            stream_into(stream, sinks, args, source, stop)
        except KeyboardInterrupt:         # the second Ctrl-C
            finish_early(stream, sinks, "interrupted (SIGINT)")
            return EXIT_SIGINT
        except TPOError as e:
            finish_early(stream, sinks, f"stopped: {e}", error=str(e))
            raise
        except BaseException as e:            # a bug: still close everything honestly, then show the traceback
            finish_early(stream, sinks, f"stopped by an internal error: {type(e).__name__}: {e}")
            raise
        if stop.reason is not None and stream.summary is None:    # (a signal after the last result: complete)
            finish_early(stream, sinks, stop.reason)
            return stop.code
    sinks.close()           # every sink is closed even if one fails; the first failure is one line, exit 2
    return 0


@one_line_errors("tpo-run")
def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except TPOError as e:
        print(f"tpo-run: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:            # before the stream started (loading)
        print("tpo-run: interrupted (SIGINT) before streaming; nothing written", file=sys.stderr)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
