"""What the bench measures besides stage times: memory, the machine's load while a part ran, thread
control, the streaming and live-source runs, and the versions of what ran."""

from __future__ import annotations

import os
import resource
import sys
import time
from contextlib import suppress
from pathlib import Path

import numpy as np

from tpo.contract import Tracker
from tpo.contract.graphs import GraphSpec
from tpo.contract.tasks import TASKS

from .plan import LLM_STAGES
from .stages import summarize


def device_memory_mb() -> dict | None:
    """GPU memory in use (nvidia-smi, the whole device) and torch's peak allocation; None without a GPU."""
    import shutil
    import subprocess

    out: dict = {}
    if shutil.which("nvidia-smi"):
        with suppress(OSError, subprocess.SubprocessError, ValueError):
            text = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10).stdout
            out["nvidia_smi_used_mb"] = float(text.split()[0])
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["torch_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / (1 << 20), 1)
    return out or None


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1 << 20) if sys.platform == "darwin" else r / 1024, 1)


class LoadMeter:
    """CPU used by other processes while a part ran: (machine busy time - this process's CPU time) / wall,
    in CPUs (0.0 = a quiet machine, 1.0 = one core taken by someone else). Linux /proc/stat; None elsewhere."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _machine_busy_s(), _own_cpu_s()

    def read(self) -> dict:
        wall = time.perf_counter() - self.t0
        busy = _machine_busy_s()
        out = {"wall_s": round(wall, 2), "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
               else None}
        if busy is not None and self.busy0 is not None and wall > 0:
            own = _own_cpu_s() - self.own0
            out["own_cpus"] = round(own / wall, 2)
            out["others_cpus"] = round(max(0.0, (busy - self.busy0 - own) / wall), 2)
        return out


def _machine_busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(vals) - vals[3] - vals[4]          # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class torch_threads:
    """Context: PyTorch's intra-op threads set to `n` (restored after); a no-op without torch loaded."""

    def __init__(self, n: int):
        self.n, self.prev = n, None

    def __enter__(self):
        torch = sys.modules.get("torch")
        if torch is not None:
            self.prev = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch = sys.modules.get("torch")
        if torch is not None and self.prev is not None:
            torch.set_num_threads(self.prev)


def tracker_on(runners: dict, tracker_cfg: Tracker, prompt: np.ndarray):
    """A runtime `MaskTracker` whose graphs are `runners` (graph name -> runner), outside any session."""
    from tpo.runtime.tracker import MaskTracker

    def run(spec: GraphSpec, past: dict | None = None, **inputs: np.ndarray):
        return spec.outputs_of(runners[spec.name].run(spec.feed(past, **inputs)))

    return MaskTracker(run, tracker_cfg, prompt)


def sum_counts(counts: list[dict | None]) -> dict | None:
    if any(c is None for c in counts) or not counts:
        return None
    keys = ("flops", "matmul_flops", "elementwise_flops", "bytes", "weight_bytes", "io_bytes", "activation_bytes",
            "nodes", "uncounted_count")
    return {k: sum(c[k] for c in counts) for k in keys}


def extrapolate_layers(by_stage: dict, num_layers: int, base=1, per_layer=(1, 2)) -> dict:
    """t(L) = t(base) + (L - 1) * (t(per_layer[1]) - t(per_layer[0])), per variant, from p50s: `base` is a
    1-layer graph (head included), `per_layer` two graphs one layer apart (the difference is one layer)."""
    out = {}
    for g in LLM_STAGES:
        one, a, b = by_stage.get((g, base)), by_stage.get((g, per_layer[0])), by_stage.get((g, per_layer[1]))
        if one is None or a is None or b is None:
            continue
        rows = {}
        for v in one["variants"]:
            if v not in a["variants"] or v not in b["variants"]:
                continue
            t1 = one["variants"][v]["p50"]
            per_layer_ms = max(b["variants"][v]["p50"] - a["variants"][v]["p50"], 0.0)
            rows[v] = {"p50_1_layer_ms": t1, "per_layer_ms": round(per_layer_ms, 3),
                       f"p50_{num_layers}_layers_ms": round(t1 + (num_layers - 1) * per_layer_ms, 2)}
        out[g] = {"label": f"EXTRAPOLATED to {num_layers} layers: 1-layer graph + {num_layers - 1} x the measured "
                           f"cost of one layer", "variants": rows}
    return out


def load_config_layers(name: str) -> int:
    from tpo.model.config import load_config

    return load_config(name).llm.num_layers


def first_result(s, question: str, frames: np.ndarray, fps: float) -> str:
    """Question in, first result out, as a caller of `runtime.Stream` gets it; returns the task triggered.

    The stream asks the question about its first frames, then hands each frame to the routed task's runtime
    module: the first result that shows the answer ends the wait: one with objects (track: the first tracked
    frame; region: the box), the closing one (temporal: the offline windows of the clip), or the first one
    for a question no head answers (chat: the text)."""
    from tpo.runtime.sources import open_source
    from tpo.runtime.stream import Stream
    from tpo.runtime.tasks import StreamOptions

    stream = Stream(s, open_source(frames, fps=fps), question, StreamOptions(with_masks=False))
    for result in stream:
        if result.objects or result.final or stream.task not in TASKS:
            break
    stream.source.close()
    return stream.task


def _track_event(frame, r) -> dict:
    from tpo.runtime.rle import rle_encode

    return {"type": "track", "frame": frame.index if hasattr(frame, "index") else int(frame),
            "time_s": getattr(frame, "time_s", 0.0), "box": r["box"], "score": r["score"],
            "mask_rle": rle_encode(r["mask"])}


def stream_file(s, video: Path, max_frames: int, prompt: np.ndarray, jsonl: Path, budget_s: float | None = None
                ) -> dict:
    """Every frame of a file through capture -> frame path -> JSONL; latency per frame from read to written.
    Past `budget_s` the stream stops early (`stopped_early`; the frames read are still all accounted for)."""
    from tpo.runtime.sinks import JsonlSink
    from tpo.runtime.sources import open_source

    tracker = s.tracker(prompt)
    lat = []
    start = time.perf_counter()
    with open_source(str(video), max_frames=max_frames) as src, JsonlSink(jsonl) as sink:
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(src)
            except StopIteration:
                break
            r = s.track_frame(tracker, frame.rgb)[0]
            sink.write_event(_track_event(frame, r))
            lat.append(time.perf_counter() - t0)
            if budget_s is not None and time.perf_counter() - start > budget_s:
                break
        stats = src.stats
    wall = time.perf_counter() - start
    return {"processed": len(lat), "frames_in": stats.frames_in, "dropped": stats.dropped,
            "stopped_early": len(lat) < max_frames,
            "sustained_fps": round(len(lat) / wall, 2) if wall > 0 else None, "latency_ms": summarize(lat),
            "first_frame_ms": round(lat[0] * 1e3, 3) if lat else None}


def live_source(s, frames: np.ndarray, fps: float, seconds: float, prompt: np.ndarray, jsonl: Path,
                clock=time.perf_counter, sleep=time.sleep) -> dict:
    """A live camera simulated on the clock: frame i arrives at i / fps; a free consumer takes the newest
    arrived frame (older unprocessed ones are dropped); a result later than one period after its frame's
    arrival misses its deadline. Frames in = processed + dropped."""
    from tpo.runtime.sinks import JsonlSink

    n = max(1, int(round(seconds * fps)))
    period = 1.0 / fps
    tracker = s.tracker(prompt)
    last, processed, dropped, misses = -1, 0, 0, 0
    lat = []
    with JsonlSink(jsonl) as sink:
        start = clock()
        while last < n - 1:
            now = clock() - start
            newest = min(int(now / period), n - 1)
            if newest <= last:
                sleep(max(0.0, (last + 1) * period - now))
                continue
            dropped += newest - last - 1
            r = s.track_frame(tracker, frames[newest % len(frames)])[0]
            sink.write_event(_track_event(newest, r))
            latency = clock() - start - newest * period
            lat.append(latency)
            misses += latency > period
            processed += 1
            last = newest
        wall = clock() - start
    return {"frames_in": n, "processed": processed, "dropped": dropped, "deadline_misses": int(misses),
            "miss_rate": round(misses / processed, 4) if processed else None,
            "processed_fps": round(processed / wall, 2), "latency_ms": summarize(lat),
            "accounted": n == processed + dropped}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("tpo-edge", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "opencv-python-headless",
                 "tensorrt"):
        with suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
