"""The benchmark: variants, the stage list, end-to-end runs and the scaling sweeps, into one result dict.

Order of a run (each part alternates the variants after warm-up, see `stages.alternate`):
1. machine peak (`floor.measure_peak`), a 320x240 30 fps MJPG clip written by the bench (synthetic scene),
   the tiny artifacts (cached exports or `--artifacts`), one runtime `Session` per variant;
2. stages of the embedded tiny model on real inputs captured from the clip: capture, preprocess, every graph
   (vision encoder, connector, LLM prefill, per-token decode, router, box encoder, temporal head, the mask
   pieces), the per-frame tracking step, the frame path (preprocess + step + postprocess), postprocess, sink;
3. end to end: time to first result per task, a file stream (sustained fps, latency per frame), a simulated
   live source at `source_fps` (newest frame wins; dropped frames, deadline misses);
4. scaling: frames per clip and batch, frame resolution, tracked objects, prompt length;
5. model sizes: tiny, small, videochat-tpo dimensions (random weights; LLM cost per layer extrapolated).
Peak resident memory is read after each part. The clip and the recorded feeds come from `inputs.py`;
memory, load, streaming and live-source measurements from `measure.py`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo import manifest as names
from tpo.errors import TPOError

from . import floor
from .backends import (
    CountingBackend,
    EngineClock,
    TorchDefsBackend,
    TorchGraph,
    Variant,
    quiet_onnxruntime,
    variant_name,
)
from .inputs import collect_feeds, example_feed, llm_feed, make_clip, resized, write_video
from .measure import (
    LoadMeter,
    device_memory_mb,
    extrapolate_layers,
    first_result,
    live_source,
    load_config_layers,
    make_tracker,
    rss_mb,
    stream_file,
    sum_counts,
    torch_threads,
    versions,
)
from .stages import CountingRunner, Timed, alternate

BASELINE = "torch-fp32"
SAMPLES_KEPT = 400
SIZE_GRAPHS = (names.VISION_ENCODER, names.VISION_ENCODER_IMAGE, names.CONNECTOR, names.LLM, names.TASK_ROUTER,
               names.TEMPORAL_HEAD, *names.FAST_PATH)
GOAL_STAGES = ("track_step", "vision_encoder")   # the 2x goal: ORT fp32 vs PyTorch eager
BUSY_CPUS = 0.25     # other processes' CPUs during a stage above which its numbers are flagged as noisy
PER_LAYER_VOCAB = 1024       # videochat-tpo's LLM per-layer cost is measured with the vocabulary cut to this
LAYER_LABELS = {"1": "1 layer", "1v": f"1 layer, vocab {PER_LAYER_VOCAB}", "2v": f"2 layers, vocab {PER_LAYER_VOCAB}"}


@dataclass
class Plan:
    out: Path
    quick: bool = False
    backends: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
    precisions: tuple[str, ...] = ("fp32", "fp16")
    artifacts: tuple[Path, ...] = ()
    providers: tuple[str, ...] | None = None
    torch_device: str = "cpu"
    threads: int = 2
    rounds: int = 5
    iters: int = 5
    warmup: int = 2
    stage_budget_s: float = 8.0
    source_fps: float = 30.0
    stream_frames: int = 90
    live_seconds: float = 3.0
    stream_budget_s: float = 60.0         # a file stream stops early past this (a slow variant on a busy machine)
    ttfr_rounds: int = 3
    sizes: tuple[str, ...] = ("tiny", "small", "videochat-tpo")
    size_precisions: tuple[str, ...] = ("fp32", "fp16")
    size_call_cap_s: float = 20.0         # a size's graph whose floor x 4 predicts more per call is skipped
    prompt_lengths: tuple[int, ...] = (32, 64, 128, 256, 512)
    batches: tuple[int, ...] = (1, 2, 4)
    objects: tuple[int, ...] = (1, 2, 4)
    resolutions: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1280, 720))
    preprocess_sizes: tuple[tuple[int, int], ...] = ((320, 240), (1280, 720), (1920, 1080))
    cache: Path | None = None
    export_missing: bool = True           # export tiny artifacts that are not cached (quick: fp32 only)
    progress: bool = True

    @classmethod
    def quick_plan(cls, out: Path, **kw) -> Plan:
        base = dict(out=out, quick=True, rounds=3, iters=2, warmup=1, stage_budget_s=1.0, stream_frames=20,
                    live_seconds=1.0, ttfr_rounds=2, stream_budget_s=6.0, sizes=("tiny",), prompt_lengths=(32, 128),
                    batches=(1, 2), objects=(1, 2), size_precisions=("fp32",))
        base.update(kw)
        return cls(**base)


def _samples_ms(xs: list[float]) -> list[float]:
    a = np.asarray(xs) * 1000.0
    if a.size > SAMPLES_KEPT:
        a = a[np.linspace(0, a.size - 1, SAMPLES_KEPT).astype(int)]
    return [round(float(x), 4) for x in a]


# ------------------------------------------------------------------------------------------ the suite
@dataclass
class Suite:
    plan: Plan
    log: callable = print
    result: dict = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)

    # ---- bookkeeping
    def note(self, text: str) -> None:
        self.result.setdefault("notes", []).append(text)
        self.log(f"note: {text}")

    def memory(self, phase: str) -> None:
        mem = self.result.setdefault("memory", {})
        mem.setdefault("rss_peak_mb", []).append({"phase": phase, "mb": rss_mb()})
        dev = device_memory_mb()
        if dev is not None:
            mem.setdefault("device_used_mb", []).append({"phase": phase, **dev})
            mem["device"] = "GPU memory in use (nvidia-smi, whole device) and PyTorch's peak allocation"

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="stage", disable=not self.plan.progress, leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    def stage_entry(self, timed: Timed, *, group: str, graph: str | None = None, shapes: dict | None = None,
                    count: dict | None = None, label: str | None = None) -> dict:
        entry = {"stage": timed.stage, "label": label or timed.stage, "group": group, "graph": graph,
                 "threads": self.plan.threads, "shapes": shapes, "variants": {}, "ratios": {}, "breakdown": {}, "samples_ms": {}}
        for v in timed.rounds:
            entry["variants"][v] = timed.stats(v)
            entry["samples_ms"][v] = _samples_ms(timed.samples(v))
            extra = timed.extra.get(v) or {}
            if extra.get("graph_s"):
                total = float(np.mean(timed.samples(v)))
                g, e = float(np.mean(extra["graph_s"])), float(np.mean(extra["engine_s"]))
                entry["breakdown"][v] = {"total_ms": round(total * 1e3, 4), "engine_ms": round(e * 1e3, 4),
                                         "adapter_ms": round((g - e) * 1e3, 4),
                                         "host_ms": round((total - g) * 1e3, 4),
                                         "engine_share": round(e / total, 4) if total > 0 else None}
        base = BASELINE if BASELINE in timed.rounds else next(iter(timed.rounds))
        entry["baseline"] = base
        entry["load"] = getattr(timed, "load", None)
        entry["ratios"] = timed.ratios(base)
        if count is not None:
            entry["count"] = count
            fl = floor.floor_seconds(count, self.result["peak"])
            entry["floor"] = {k: (round(v * 1e3, 5) if isinstance(v, float) else v) for k, v in fl.items()}
            entry["floor"] = {("floor_ms" if k == "floor_s" else k.replace("_s", "_ms")): v
                              for k, v in entry["floor"].items()}
            if fl["floor_s"] > 0:
                entry["x_floor"] = {v: round(st["p50"] / 1e3 / fl["floor_s"], 2)
                                    for v, st in entry["variants"].items() if st.get("count")}
        return entry

    def time_stage(self, name: str, variants: dict, *, probes: dict | None = None, rounds: int | None = None,
                   iters: int | None = None, warmup: int | None = None, budget_s: float | None = None) -> Timed:
        p = self.plan
        meter = LoadMeter()
        timed = alternate(name, variants, rounds or p.rounds, iters or p.iters,
                          p.warmup if warmup is None else warmup,
                          budget_s=p.stage_budget_s if budget_s is None else budget_s, probes=probes)
        timed.load = meter.read()
        return timed

    # ---- 1. set-up
    def setup(self) -> None:
        p = self.plan
        p.out.mkdir(parents=True, exist_ok=True)
        work = p.out / "work"
        work.mkdir(exist_ok=True)
        self.work = work
        self.result["meta"] = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": p.quick,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "python": platform.python_version()},
            "threads": p.threads, "rounds": p.rounds, "iters": p.iters, "warmup": p.warmup,
            "source_fps": p.source_fps, "baseline": BASELINE,
            "definitions": {"jitter": "p99 - p50 (ms)", "ratio": "baseline time / variant time per round "
                            "(medians of that round's calls); median and range over rounds; > 1 = faster",
                            "deadline": "a frame's result later than one source period after its arrival",
                            "x_floor": "p50 / floor; floor = max(FLOPs / peak FLOP/s, bytes / peak bytes/s)"},
            "versions": versions(),
        }
        frames, queries = make_clip(work, seconds=4.0 if not p.quick else 3.0, fps=p.source_fps)
        self.frames, self.queries = frames, queries
        self.video = write_video(work / "clip_320x240.avi", frames, p.source_fps)
        self.result["clip"] = {"file": str(self.video), "codec": "MJPG", "size": [320, 240], "fps": p.source_fps,
                               "frames": int(len(frames)), "queries": queries}
        self.memory("start")
        self.load_tiny()
        self.memory("tiny variants loaded")
        self.log("measuring the machine's peak (float32 matmul, memcpy)")
        self.result["peak"] = floor.measure_peak(quick=p.quick)

    def artifact_folders(self) -> dict[str, Path]:
        from .artifacts import cache_root, ensure_artifacts, manifest_precision, usable

        p = self.plan
        folders: dict[str, Path] = {}
        for a in p.artifacts:
            if not usable(Path(a)):
                raise TPOError(f"--artifacts {a}: not a complete tpo-export output that passed its parity gate")
            folders.setdefault(manifest_precision(Path(a)), Path(a))
        for prec in p.precisions:
            if prec in folders:
                continue
            if p.artifacts:
                self.note(f"{prec}: no --artifacts folder at that precision; skipped")
                continue
            try:
                from .artifacts import checkpoint_key

                cached = (p.cache or cache_root()) / f"tiny-{prec}-{checkpoint_key(None)}"
                if usable(cached):
                    folders[prec] = cached
                elif p.quick and prec != "fp32":
                    self.note(f"quick: no cached tiny {prec} export, so {prec} is skipped (a full run, or "
                              f"tpo-export --precision {prec} passed with --artifacts, adds it)")
                elif not p.export_missing:
                    self.note(f"no cached tiny {prec} export; skipped")
                else:
                    t0 = time.perf_counter()
                    folders[prec] = ensure_artifacts(prec, p.cache, log=self.log)
                    self.note(f"exported tiny at {prec} into the cache in {time.perf_counter() - t0:.0f} s "
                              f"(reused by later runs)")
            except TPOError as e:
                self.note(f"tiny {prec} export failed: {e}")
        if "fp32" not in folders:
            raise TPOError("no fp32 artifacts of the tiny model (pass --artifacts DIR or let the bench export)")
        return folders

    def load_tiny(self) -> None:
        from tpo.manifest import Manifest
        from tpo.runtime.backend import BackendUnavailable, open_backend
        from tpo.runtime.session import Session

        p = self.plan
        self.folders = self.artifact_folders()
        self.result["artifacts"] = {k: str(v) for k, v in self.folders.items()}
        manifests = {prec: Manifest.load(f) for prec, f in self.folders.items()}
        for m in manifests.values():
            m.verify()
        fp32 = manifests["fp32"]
        self.fp32_manifest = fp32
        if "torch" in p.backends:
            from tpo.model.checkpoint import default_checkpoint, load_checkpoint
            from tpo.model.graphs import graph_defs

            ckpt = Path(fp32["model"]["checkpoint"]["path"])
            if not ckpt.exists():
                self.note(f"{ckpt}: the artifacts' checkpoint is not here; PyTorch runs the embedded checkpoint")
                ckpt = default_checkpoint()
            model, _ = load_checkpoint(ckpt, dtype="fp32")
            self.torch_defs = {d.name: d for d in graph_defs(model)}
            counting = CountingBackend(TorchDefsBackend(self.torch_defs, threads=p.threads, device=p.torch_device))
            self.variants[BASELINE] = Variant(BASELINE, "torch", "fp32", counting.description,
                                              Session(fp32, counting), counting)
        for backend in p.backends:
            if backend == "torch":
                continue
            for prec, m in manifests.items():
                name = variant_name(backend, prec, p.providers)
                try:
                    if backend == "onnxruntime":
                        inner = quiet_onnxruntime(list(p.providers) if p.providers else None, threads=p.threads)
                    else:
                        inner = open_backend(backend)
                    counting = CountingBackend(inner)
                    self.variants[name] = Variant(name, backend, prec, counting.description, Session(m, counting),
                                                  counting)
                except (BackendUnavailable, TPOError, ImportError, OSError) as e:
                    self.note(f"{name}: skipped ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        if not self.variants:
            raise TPOError("no variant could start; see the notes above")
        self.result["variants"] = {n: {"backend": v.backend, "precision": v.precision, "description": v.description}
                                   for n, v in self.variants.items()}
        ref = self.variants.get("onnxruntime-fp32") or next(iter(self.variants.values()))
        self.feeds, self.ctx = collect_feeds(ref.session, self.frames[:60], self.plan.source_fps, self.queries)

    # ---- counting
    def count(self, graph: str, feed: dict, path: Path | None = None) -> dict | None:
        path = path or self.fp32_manifest.graph(graph).path
        try:
            return floor.count_graph(path, feeds=feed).to_dict()
        except Exception as e:                 # noqa: BLE001  (a graph the counter cannot read: no floor)
            self.note(f"FLOP count of {graph} failed ({type(e).__name__}: {str(e)[:80]})")
            return None

    # ---- 2. stages of the tiny model
    def run_stages(self) -> None:
        from tpo.runtime import postprocess, preprocess
        from tpo.runtime.rle import rle_encode
        from tpo.runtime.sinks import JsonlSink
        from tpo.runtime.sources import open_source

        stages: list[dict] = []
        vs = self.variants
        graph_stages = [
            ("vision_encoder", names.VISION_ENCODER, f"vision encoder (T={self.plan_frames()})"),
            ("vision_encoder_image", names.VISION_ENCODER_IMAGE, "vision encoder (T=1)"),
            ("connector", names.CONNECTOR, "connector"),
            ("llm_prefill", names.LLM, f"LLM prefill ({self.ctx['prompt_tokens']} tokens)"),
            ("llm_decode", names.LLM, "LLM decode (per token)"),
            ("task_router", names.TASK_ROUTER, "task router"),
            ("box_encoder", names.BOX_ENCODER, "box encoder"),
            ("temporal_head", names.TEMPORAL_HEAD, "temporal head"),
            ("mask_image_encoder", names.MASK_IMAGE_ENCODER, "mask: image encoder"),
            ("mask_decoder_prompted", names.MASK_DECODER_PROMPTED, "mask: decoder, prompted (frame 0)"),
            ("memory_attention", names.MEMORY_ATTENTION, "mask: memory attention"),
            ("mask_decoder_tracked", names.MASK_DECODER_TRACKED, "mask: decoder, tracked"),
            ("memory_encoder", names.MEMORY_ENCODER, "mask: memory encoder"),
        ]
        n_host = 5
        bar = self._bar(len(graph_stages) + 2 + n_host, "stages")
        counts: dict[str, dict | None] = {}
        for stage, graph, label in graph_stages:
            bar.set_postfix_str(stage)
            feed = self.feeds[stage if stage in ("llm_prefill", "llm_decode") else graph]
            fns = {n: (lambda r=v.session.runners[graph], f=feed: r.run(f)) for n, v in vs.items()}
            probes = {n: EngineClock({graph: v.runners[graph]}).take for n, v in vs.items() if graph in v.runners}
            timed = self.time_stage(stage, fns, probes=probes)
            counts[stage] = self.count(graph, feed)
            stages.append(self.stage_entry(timed, group="graph", graph=graph, label=label,
                                           shapes={k: list(np.shape(x)) for k, x in feed.items()
                                                   if not k.startswith("past_key_values")},
                                           count=counts[stage]))
            bar.update(1)
        # the per-frame tracking step and the frame path
        mk = self.fp32_manifest["preprocess"]["mask"]
        frames = self.frames[:60]
        pix = [preprocess.mask_frame(f, mk["image_size"], mk["mean"], mk["std"]) for f in frames]
        step_fns, path_fns, step_probes, path_probes = {}, {}, {}, {}
        for n, v in vs.items():
            trackers = self.primed_tracker(v, self.ctx["track_prompt"], pix)
            step_fns[n] = trackers["step"]
            path_fns[n] = trackers["path"]
            step_probes[n] = EngineClock(dict(v.runners)).take
            path_probes[n] = EngineClock(dict(v.runners)).take
        bar.set_postfix_str("track_step")
        timed = self.time_stage("track_step", step_fns, probes=step_probes)
        step_count = sum_counts([counts[s] for s in ("mask_image_encoder", "memory_attention",
                                                     "mask_decoder_tracked", "memory_encoder")])
        stages.append(self.stage_entry(timed, group="composite", label="per-frame tracking step (4 graphs + host "
                                       "memory bank)", count=step_count))
        bar.update(1)
        bar.set_postfix_str("frame_path")
        timed = self.time_stage("frame_path", path_fns, probes=path_probes)
        stages.append(self.stage_entry(timed, group="composite", label="frame path 320x240: preprocess + step + "
                                       "postprocess", count=step_count))
        bar.update(1)
        # host stages (the same code for every runtime backend; PyTorch's own where the model side has one)
        host = "runtime-numpy"
        clip_idx = preprocess.middle_frame_indices(self.plan_frames(), len(frames))
        mp = self.fp32_manifest["preprocess"]["mllm"]
        host_stages = []
        src = {"it": None}

        def capture():
            if src["it"] is None:
                src["it"] = open_source(str(self.video))
            try:
                return next(src["it"])
            except StopIteration:
                src["it"] = open_source(str(self.video))
                return next(src["it"])

        host_stages.append(("capture", "capture: decode 320x240 MJPG (OpenCV) + BGR->RGB", {"runtime-opencv": capture}))
        pre_clip = {host: lambda: preprocess.mllm_pixels(frames[clip_idx], mp["image_size"], mp["mean"], mp["std"])}
        pre_frame = {host: lambda: preprocess.mask_frame(frames[7], mk["image_size"], mk["mean"], mk["std"])}
        logits = self.feeds[names.MEMORY_ENCODER]["mask_logits"][0, 0]
        post = {host: lambda: postprocess.mask_and_box(logits, 240, 320)}
        if BASELINE in vs:
            import torch

            from tpo.model import mask_tracker as mt
            from tpo.model import preprocess as tpre

            pre_clip[BASELINE] = lambda: tpre.mllm_pixels(frames[clip_idx], mp["image_size"], mp["mean"], mp["std"])
            pre_frame[BASELINE] = lambda: tpre.mask_pixels(frames[7:8], mk["image_size"], mk["mean"], mk["std"])
            tl = torch.from_numpy(np.ascontiguousarray(self.feeds[names.MEMORY_ENCODER]["mask_logits"][:1]))
            post[BASELINE] = lambda: mt.boxes_from_masks(mt.upsample_mask_logits(tl, (240, 320)) > 0)
        host_stages.append(("preprocess_clip", f"preprocess: clip of {self.plan_frames()} frames for the vision "
                            "encoder", pre_clip))
        host_stages.append(("preprocess_frame", "preprocess: one frame for the mask encoder", pre_frame))
        host_stages.append(("postprocess", "postprocess: mask logits -> mask + box at 320x240", post))
        sink = JsonlSink(self.work / "sink.jsonl")
        mask, box = postprocess.mask_and_box(logits, 240, 320)
        counter = {"i": 0}

        def write():
            counter["i"] += 1
            sink.write_event({"type": "track", "frame": counter["i"], "time_s": counter["i"] / 30.0, "box": box,
                              "score": 1.0, "mask_rle": rle_encode(mask)})

        host_stages.append(("sink", "sink: JSONL track event (mask RLE + write + flush)", {"runtime-jsonl": write}))
        for stage, label, fns in host_stages:
            bar.set_postfix_str(stage)
            timed = self.time_stage(stage, fns)
            stages.append(self.stage_entry(timed, group="host", label=label))
            bar.update(1)
        sink.close()
        bar.close()
        self.result["stages"] = stages
        self.memory("tiny stages")

    # ---- 2b. preprocessing at camera sizes (tiny)
    def run_preprocess_sizes(self) -> None:
        """Both branches' preprocessing per frame size next to the tracking step (see preprocessing.py)."""
        from tpo.runtime import preprocess

        from .preprocessing import measure, size_name

        vs = self.variants
        name = next((n for n, v in vs.items() if v.backend == "onnxruntime" and v.precision == "fp32"),
                    next(iter(vs)))
        v = vs[name]
        path = v.session.frame_path
        pix = [path.mask_frame(f) for f in self.frames[:12]]
        step = self.primed_tracker(v, self.ctx["track_prompt"], pix)["step"]
        clip = self.frames[preprocess.middle_frame_indices(self.plan_frames(), len(self.frames))]
        frames = {size_name(w, h): resized(clip, (w, h)) for w, h in self.plan.preprocess_sizes}
        logits = self.feeds[names.MEMORY_ENCODER]["mask_logits"][0, 0]
        bar = self._bar(len(frames), "preprocessing sizes")

        def timer(stage, fns):
            bar.set_postfix_str(stage)
            timed = self.time_stage(stage, fns)
            bar.update(1)
            return timed

        self.result["preprocess_sizes"] = measure(frames, path, step, logits, timer, name,
                                                  self.fp32_manifest["preprocess"])
        bar.close()
        self.memory("preprocessing sizes")

    def plan_frames(self) -> int:
        return int(self.fp32_manifest["preprocess"]["mllm"]["num_frames"])

    def primed_tracker(self, v: Variant, prompt: np.ndarray, pix: list[np.ndarray], frames=None) -> dict:
        """A tracker past its prompted frame (every later step has the same static shapes, so its cost does
        not depend on how full the memory bank is): step and path fns."""
        s = v.session
        k = 1
        tracker = s.tracker(prompt)
        for p in pix[: k + 1]:
            tracker.step(p)
        frames = self.frames[:60] if frames is None else frames
        i = {"n": k + 1}

        def step():
            i["n"] += 1
            return tracker.step(pix[i["n"] % len(pix)])

        ptracker = s.tracker(prompt)
        for f in frames[: k + 1]:
            s.track_frame(ptracker, f)
        j = {"n": k + 1}

        def path():
            j["n"] += 1
            return s.track_frame(ptracker, frames[j["n"] % len(frames)])

        return {"step": step, "path": path}

    # ---- 3. end to end
    def run_end_to_end(self) -> None:
        p = self.plan
        vs = self.variants
        frames = self.frames[:60]
        fps = p.source_fps
        bar = self._bar(4 + 2 * len(vs), "end to end")
        ttfr = {}
        for task in ("track", "region", "temporal", "conversation"):
            q = self.queries.get(task)
            if q is None:
                continue
            bar.set_postfix_str(f"first result: {task}")
            triggered: dict[str, str] = {}
            fns = {n: (lambda v=v, n=n, t=task, q=q, d=triggered: d.__setitem__(
                n, first_result(v.session, t, q, frames, fps))) for n, v in vs.items()}
            timed = alternate(f"first_result:{task}", fns, p.ttfr_rounds, 1, warmup=0 if p.quick else 1,
                              budget_s=p.stage_budget_s)
            entry = self.stage_entry(timed, group="first_result", label=f"time to first result: {task} ({q!r})")
            entry["triggered"] = triggered
            ttfr[task] = entry
            bar.update(1)
        self.result["first_result"] = ttfr
        stream, live = {}, {}
        order = list(vs)
        for n in order:
            bar.set_postfix_str(f"stream {n}")
            stream[n] = stream_file(vs[n].session, self.video, p.stream_frames, self.ctx["track_prompt"],
                                    self.work / f"stream-{n}.jsonl", budget_s=p.stream_budget_s)
            bar.update(1)
        for n in reversed(order):     # reversed: neither list always runs first on a warm machine
            bar.set_postfix_str(f"live {n}")
            live[n] = live_source(vs[n].session, frames, fps, p.live_seconds, self.ctx["track_prompt"],
                                  self.work / f"live-{n}.jsonl")
            bar.update(1)
        bar.close()
        self.result["stream"] = {"source": str(self.video), "frames": p.stream_frames, "variants": stream}
        self.result["live"] = {"source_fps": fps, "seconds": p.live_seconds, "queue": "newest frame wins (1 slot)",
                               "variants": live}
        self.memory("end to end")

    # ---- 4. scaling (tiny)
    def run_scaling(self) -> None:
        from tpo.runtime import preprocess

        p = self.plan
        vs = self.variants
        sc: dict[str, dict] = {}
        t = self.plan_frames()
        batches = [b for b in p.batches if b <= self.fp32_manifest["dims"]["batch"]["max"]]
        plan_items = len(batches) * 2 + len(p.resolutions) * 2 + len(p.objects) + len(p.prompt_lengths)
        bar = self._bar(plan_items, "scaling")

        def run(axis, x, stage, fns, probes=None, entry_kw=None):
            bar.set_postfix_str(stage)
            timed = self.time_stage(stage, fns, probes=probes)
            entry = self.stage_entry(timed, **(entry_kw or {"group": "scaling"}))
            axis_d = sc.setdefault(axis, {"x": [], "stages": []})
            axis_d["x"].append(x)
            axis_d["stages"].append(entry)
            bar.update(1)

        # frames per clip and batch
        for graph, frames_n in ((names.VISION_ENCODER_IMAGE, 1), (names.VISION_ENCODER, t)):
            base = self.feeds[graph]["pixels"]
            for b in batches:
                feed = {"pixels": np.ascontiguousarray(np.repeat(base, b, axis=0))}
                fns = {n: (lambda r=v.session.runners[graph], f=feed: r.run(f)) for n, v in vs.items()}
                run(f"vision encoder batch (T={frames_n})", b, f"vision_encoder[T={frames_n},b={b}]", fns,
                    entry_kw={"group": "scaling", "count": self.count(graph, feed)})
        sc["frames per clip (batch 1)"] = {"x": [1, t], "stages": [sc[f"vision encoder batch (T={n})"]["stages"][0]
                                                                   for n in (1, t)]}
        # resolution: capture + preprocess + step + postprocess
        mk = self.fp32_manifest["preprocess"]["mask"]
        for w, h in p.resolutions:
            frames = resized(self.frames[:24], (w, h))
            video = write_video(self.work / f"clip_{w}x{h}.avi", frames, p.source_fps)
            holder = {"src": None}

            def cap(video=video, holder=holder):
                from tpo.runtime.sources import open_source

                if holder["src"] is None:
                    holder["src"] = open_source(str(video))
                try:
                    return next(holder["src"])
                except StopIteration:
                    holder["src"] = open_source(str(video))
                    return next(holder["src"])

            run("capture resolution", f"{w}x{h}", f"capture[{w}x{h}]", {"runtime-opencv": cap})
            pix = [preprocess.mask_frame(f, mk["image_size"], mk["mean"], mk["std"]) for f in frames[:8]]
            fns = {n: self.primed_tracker(v, self.ctx["track_prompt"], pix, frames)["path"] for n, v in vs.items()}
            run("frame path resolution", f"{w}x{h}", f"frame_path[{w}x{h}]", fns)
        # tracked objects
        pix = [preprocess.mask_frame(f, mk["image_size"], mk["mean"], mk["std"]) for f in self.frames[:12]]
        for o in p.objects:
            rng = np.random.default_rng(o)
            prompt = np.concatenate([self.ctx["track_prompt"]] + [
                self.ctx["track_prompt"] + 0.05 * rng.standard_normal(self.ctx["track_prompt"].shape).astype(np.float32)
                for _ in range(o - 1)])
            fns = {n: self.primed_tracker(v, prompt, pix)["step"] for n, v in vs.items()}
            run("tracked objects", o, f"track_step[objects={o}]", fns)
        # prompt length (prefill)
        ref = next(iter(vs.values())).session
        limit = int(self.fp32_manifest["llm"]["max_prompt_tokens"])
        rng = np.random.default_rng(0)
        for length in [x for x in p.prompt_lengths if x <= limit]:
            ids = rng.integers(3, ref.token_table.shape[0], size=length)
            feed = llm_feed(ref.llm_cfg, ref.embed_tokens(ids)[None], None)
            fns = {n: (lambda r=v.session.runners[names.LLM], f=feed: r.run(f)) for n, v in vs.items()}
            run("prompt length (prefill)", length, f"llm_prefill[{length}]", fns,
                entry_kw={"group": "scaling", "count": self.count(names.LLM, feed)})
        bar.close()
        self.result["scaling"] = sc
        self.memory("scaling")

    # ---- 4b. threads per engine (tiny goal stages)
    def run_threads(self) -> None:
        """The goal stages at 1 thread per engine too (the main table runs at --threads)."""
        from tpo.runtime import preprocess
        from tpo.runtime.tracker import MaskTracker

        p = self.plan
        if p.threads == 1:
            return
        graphs = (names.VISION_ENCODER, *names.FAST_PATH)
        mk = self.fp32_manifest["preprocess"]["mask"]
        pix = [preprocess.mask_frame(f, mk["image_size"], mk["mean"], mk["std"]) for f in self.frames[:12]]
        main = {e["stage"]: e for e in self.result.get("stages", [])}
        axis = {"x": [], "stages": []}
        bar = self._bar(2, "threads=1")
        with torch_threads(1):
            runners: dict[str, dict] = {}
            for n, v in self.variants.items():
                if v.backend == "torch":
                    runners[n] = {g: CountingRunner(TorchGraph(self.torch_defs[g], p.torch_device)) for g in graphs}
                elif v.backend == "onnxruntime":
                    be = quiet_onnxruntime(list(p.providers) if p.providers else None, threads=1)
                    runners[n] = {g: CountingRunner(be.load(v.session.manifest.graph(g))) for g in graphs}
            feed = self.feeds[names.VISION_ENCODER]
            fns = {n: (lambda r=r[names.VISION_ENCODER]: r.run(feed)) for n, r in runners.items()}
            probes = {n: EngineClock({names.VISION_ENCODER: r[names.VISION_ENCODER]}).take for n, r in runners.items()}
            bar.set_postfix_str("vision_encoder")
            timed = self.time_stage("vision_encoder[threads=1]", fns, probes=probes)
            e1 = self.stage_entry(timed, group="scaling", graph=names.VISION_ENCODER,
                                  count=main.get("vision_encoder", {}).get("count"))
            bar.update(1)
            fns, probes = {}, {}
            for n, r in runners.items():
                fast = {g: r[g] for g in names.FAST_PATH}
                tracker = make_tracker(MaskTracker, fast, self.variants[n].session.tracker_cfg, self.ctx["track_prompt"])
                for x in pix[:2]:
                    tracker.step(x)
                fns[n] = (lambda t=tracker: t.step(pix[3]))
                probes[n] = EngineClock(fast).take
            bar.set_postfix_str("track_step")
            timed = self.time_stage("track_step[threads=1]", fns, probes=probes)
            e2 = self.stage_entry(timed, group="scaling", count=main.get("track_step", {}).get("count"))
            bar.update(1)
        bar.close()
        for e in (e1, e2):
            e["threads"] = 1
        axis = {"x": ["vision_encoder 1", f"vision_encoder {p.threads}", "track_step 1", f"track_step {p.threads}"],
                "stages": [e1, main.get("vision_encoder"), e2, main.get("track_step")]}
        axis["stages"] = [e for e in axis["stages"] if e is not None]
        axis["x"] = axis["x"][: len(axis["stages"])]
        self.result.setdefault("scaling", {})["threads per engine"] = axis
        self.memory("threads")

    # ---- 5. model sizes
    def run_sizes(self) -> None:
        out: dict[str, dict] = {}
        for size in self.plan.sizes:
            try:
                if size == "tiny":
                    out[size] = self.size_from_stages()
                else:
                    out[size] = self.size_random(size)
            except Exception as e:          # noqa: BLE001  (best effort per size: the rest of the report stands)
                self.note(f"model size {size}: not measured ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
            self.memory(f"size {size}")
        self.result["sizes"] = out

    def size_from_stages(self) -> dict:
        keep = ("vision_encoder", "vision_encoder_image", "connector", "llm_prefill", "llm_decode", "task_router",
                "temporal_head", "mask_image_encoder", "memory_attention", "mask_decoder_tracked", "memory_encoder",
                "track_step")
        stages = [e for e in self.result.get("stages", []) if e["stage"] in keep]
        return {"weights": "embedded trained checkpoint", "stages": stages, "params_m": self.param_count()}

    def param_count(self) -> float | None:
        defs = getattr(self, "torch_defs", None)
        if not defs:
            return None
        seen, n = set(), 0
        for d in defs.values():
            for prm in d.module.parameters():
                if id(prm) not in seen:
                    seen.add(id(prm))
                    n += prm.numel()
        return round(n / 1e6, 3)

    def size_random(self, size: str) -> dict:
        """A model of `size` with random weights: each graph through PyTorch and onnxruntime (per-graph export)."""
        from tpo.runtime.tracker import MaskTracker

        from .artifacts import graph_files

        p = self.plan
        big = size == "videochat-tpo"
        precisions = tuple(x for x in p.size_precisions if x in p.precisions and (x == "fp32" or not big))
        layers = ("1", "1v", "2v") if big else (None,)
        result: dict = {"weights": "random (seed 0)", "stages": [], "extrapolated": {}}
        if big:
            result["llm_layers_measured"] = list(layers)
        files_by_layers = {}
        if big:
            # the whole model with a 32-layer LLM does not fit here: everything but the LLM from a model with a
            # 1-layer LLM, and the LLM alone at 1 and 2 layers (per-layer cost, extrapolated below)
            graphs = tuple(g for g in SIZE_GRAPHS if g not in (names.LLM, names.VISION_ENCODER))
            self.log(f"model size {size}: building (LLM cut to 1 layer) and exporting {len(graphs)} graph(s) at "
                     f"{', '.join(precisions)} (cached after the first run; minutes)")
            gf = graph_files(size, graphs, precisions, p.cache, llm_layers=1, log=self.log)
            # per-layer cost from 1 and 2 layers with the vocabulary cut to PER_LAYER_VOCAB (a 2-layer graph with
            # the full 32k x 4096 head is over protobuf's 2 GB; a layer's cost does not depend on the vocabulary);
            # the head and the first layer from the full-vocabulary 1-layer graph
            # (built one at a time, when first needed, and dropped after: they do not fit together)
            llm_specs = {"1": (1, None), "1v": (1, PER_LAYER_VOCAB), "2v": (2, PER_LAYER_VOCAB)}

            def llm_files(key):
                if key not in files_by_layers:
                    files_by_layers.clear()
                    nl, vocab = llm_specs[key]
                    self.log(f"model size {size}: the LLM alone, {nl} layer(s)"
                             + (f", vocabulary cut to {vocab}" if vocab else ""))
                    files_by_layers[key] = graph_files(size, (names.LLM,), precisions, p.cache, llm_layers=nl,
                                                       log=self.log, only_llm=True, llm_vocab=vocab)
                return files_by_layers[key]
            self.note("videochat-tpo: the 16-frame vision encoder (3136 tokens) is not run on this machine; the "
                      "1-frame encoder is (x16 its time is a lower bound: attention grows faster than linearly)")
        else:
            self.log(f"model size {size}: building and exporting {len(SIZE_GRAPHS)} graphs at "
                     f"{', '.join(precisions)} (cached after the first run)")
            gf = graph_files(size, SIZE_GRAPHS, precisions, p.cache, log=self.log)
            files_by_layers[None] = gf

            def llm_files(key):
                return gf
        cfg = gf.model.cfg
        result["params_m"] = round(sum(x.numel() for x in gf.model.parameters()) / 1e6, 1)
        if big:
            result["params_note"] = "with the LLM cut to 1 layer"
        gv = cfg.vision.grid
        prompt_len = cfg.num_visual_tokens + 24
        sizes_prefill = {"batch": 1, "num_vision_tokens": cfg.vision.num_frames * gv * gv, "sequence": prompt_len,
                         "past_sequence": 0, "total_sequence": prompt_len, "boxes": 1, "text_tokens": 12,
                         "clips": 32, "objects": 1}
        sizes_decode = dict(sizes_prefill, sequence=1, past_sequence=prompt_len, total_sequence=prompt_len + 1)
        orts: dict[int, object] = {}

        def variants_for(files, graph, threads=p.threads):
            out = {}
            if "torch" in p.backends:
                out[BASELINE] = CountingRunner(TorchGraph(files.defs[graph], p.torch_device))
            if "onnxruntime" in p.backends:
                if threads not in orts:
                    orts[threads] = quiet_onnxruntime(list(p.providers) if p.providers else None, threads=threads)
                for prec in precisions:
                    out[variant_name("onnxruntime", prec, p.providers)] = CountingRunner(
                        orts[threads].load(files.onnx[(graph, prec)]))
            return out

        plan_graphs = [(g, None) for g in gf.defs if g != names.LLM]
        items = [(g, nl) for g, nl in plan_graphs] + [(g, nl) for nl in layers for g in ("llm_prefill", "llm_decode")] \
            + [("track_step", None)]
        extra_threads = [1] if p.threads > 1 and not big else []
        items += [(g, ("threads", t)) for t in extra_threads for g in GOAL_STAGES
                  if g == "track_step" or g in gf.defs]
        bar = self._bar(len(items), f"size {size}")
        rounds, iters = (2, 1) if big else (max(2, p.rounds - 2), max(1, p.iters // 2))
        by_stage: dict[tuple[str, int | None], dict] = {}
        skipped: set[str] = set()
        for g, nl in items:
            threads = nl[1] if isinstance(nl, tuple) else p.threads
            if isinstance(nl, tuple):
                nl = None
            files = llm_files(nl) if g.startswith("llm") else gf
            stage = g if nl is None else f"{g}[{LAYER_LABELS[nl]}]"
            if threads != p.threads:
                stage = f"{stage}[threads={threads}]"
            bar.set_postfix_str(stage)
            with torch_threads(threads):
                if g == "track_step" and skipped & set(names.FAST_PATH):
                    self.note(f"{size} {stage}: skipped with {', '.join(sorted(skipped & set(names.FAST_PATH)))}")
                    bar.update(1)
                    continue
                if g == "track_step":
                    entry = self.size_track_step(files, lambda f, gr, t=threads: variants_for(f, gr, t), MaskTracker,
                                                 rounds, iters, stage)
                    if entry is not None:
                        entry["threads"] = threads
                        result["stages"].append(entry)
                    bar.update(1)
                    continue
                graph = names.LLM if g.startswith("llm") else g
                feed = example_feed(files.defs[graph], sizes_decode if g == "llm_decode" else sizes_prefill)
                count = self.count(graph, feed, files.onnx[(graph, "fp32")].path)
                if count is not None:
                    fl = floor.floor_seconds(count, self.result["peak"])["floor_s"]
                    if fl * 4 > p.size_call_cap_s:      # eager CPU runs land ~2-10x above the floor
                        self.note(f"{size} {stage}: skipped, its floor ({fl:.2f} s per call) predicts calls over "
                                  f"{p.size_call_cap_s:.0f} s here")
                        skipped.add(graph)
                        bar.update(1)
                        continue
                runners = variants_for(files, graph, threads)
                probes = {n: EngineClock({graph: r}).take for n, r in runners.items()}
                fns = {n: (lambda r=r, f=feed: r.run(f)) for n, r in runners.items()}
                timed = self.time_stage(stage, fns, probes=probes, rounds=rounds, iters=iters, warmup=1,
                                        budget_s=self.plan.stage_budget_s * (3 if big else 1.5))
            entry = self.stage_entry(timed, group=f"size:{size}", graph=graph, count=count,
                                     shapes={k: list(np.shape(x)) for k, x in feed.items()
                                             if not k.startswith("past_key_values")})
            entry["threads"] = threads
            result["stages"].append(entry)
            by_stage[(g, nl)] = entry
            bar.update(1)
        bar.close()
        if big:
            result["extrapolated"] = extrapolate_layers(by_stage, load_config_layers(size), base="1",
                                                        per_layer=("1v", "2v"))
        return result

    def size_track_step(self, files, variants_for, MaskTracker, rounds, iters, stage="track_step") -> dict | None:
        cfg = files.model.cfg
        mh = cfg.mask_head
        tracker_cfg = {"num_maskmem": mh.num_maskmem, "max_object_pointers": mh.max_object_pointers,
                       "feature_size": mh.feature_size, "memory_dim": mh.memory_dim, "hidden_size": mh.hidden_size}
        if not all(g in files.defs for g in names.FAST_PATH):
            return None
        rng = np.random.default_rng(0)
        pix = [rng.standard_normal((1, 3, mh.image_size, mh.image_size)).astype(np.float32) for _ in range(3)]
        prompt = rng.standard_normal((1, cfg.adapters.track_prompt_tokens, mh.hidden_size)).astype(np.float32)
        per_graph = {g: variants_for(files, g) for g in names.FAST_PATH}
        fns, probes = {}, {}
        for v in per_graph[names.MASK_IMAGE_ENCODER]:
            runners = {g: per_graph[g][v] for g in names.FAST_PATH}
            tracker = make_tracker(MaskTracker, runners, tracker_cfg, prompt)
            for i in range(2):        # frame 0 (prompted) + one tracked frame: every shape is static, so the
                tracker.step(pix[i % len(pix)])   # cost of a step does not depend on how full the bank is
            fns[v] = (lambda t=tracker: t.step(pix[0]))
            probes[v] = EngineClock(runners).take
        timed = self.time_stage(stage, fns, probes=probes, rounds=rounds, iters=iters, warmup=1,
                                budget_s=self.plan.stage_budget_s * 1.5)
        counts = []
        for g in (names.MASK_IMAGE_ENCODER, names.MEMORY_ATTENTION, names.MASK_DECODER_TRACKED, names.MEMORY_ENCODER):
            sizes = {"objects": 1}
            counts.append(self.count(g, example_feed(files.defs[g], sizes), files.onnx[(g, "fp32")].path))
        return self.stage_entry(timed, group=f"size:{files.config}", count=sum_counts(counts),
                                label=stage.replace("track_step", "per-frame tracking step"))

    # ---- the goal check
    def goal(self) -> None:
        """The issue's goal per size, stage and thread count, with the breakdown of where the time goes."""
        rows = []
        entries = [("tiny", e) for e in self.result.get("stages", [])]
        entries += [("tiny", e) for e in self.result.get("scaling", {}).get("threads per engine", {}).get("stages", [])
                    if e.get("threads") != self.plan.threads]
        for size, d in self.result.get("sizes", {}).items():
            if size != "tiny":
                entries += [(size, e) for e in d["stages"]]
        ort = variant_name("onnxruntime", "fp32", self.plan.providers)
        components = ("mask_image_encoder", "memory_attention", "mask_decoder_tracked", "memory_encoder")
        for size, e in entries:
            base = e["stage"].split("[")[0]
            if base not in GOAL_STAGES:
                continue
            r = (e.get("ratios") or {}).get(ort)
            if r is None:
                continue
            others = (e.get("load") or {}).get("others_cpus")
            parts = []
            if base == "track_step" and e.get("threads", self.plan.threads) == self.plan.threads:
                pool = {x["stage"]: x for s_, x in entries if s_ == size}
                for c in components:
                    x = pool.get(c)
                    if x is None or ort not in x["variants"] or BASELINE not in x["variants"]:
                        continue
                    parts.append({"graph": c, "torch_ms": x["variants"][BASELINE]["p50"],
                                  "ort_ms": x["variants"][ort]["p50"], "ratio": (x["ratios"].get(ort) or {}).get("median"),
                                  "ort_x_floor": (x.get("x_floor") or {}).get(ort)})
            rows.append({"size": size, "stage": base, "components": parts, "threads": e.get("threads", self.plan.threads), "ratio": r,
                         "met": r["median"] >= 2.0, "breakdown": e.get("breakdown", {}), "others_cpus": others,
                         "noisy": others is not None and others > BUSY_CPUS})
        rows.sort(key=lambda r: (r["size"] != "tiny", r["size"], r["stage"], r["threads"]))
        self.result["goal"] = {"target": "onnxruntime fp32 >= 2x PyTorch eager (median per-round ratio)",
                               "rows": rows}

    def run(self) -> dict:
        t0 = time.perf_counter()
        load = LoadMeter()
        self.result["load"] = {}
        for part in (self.setup, self.run_stages, self.run_preprocess_sizes, self.run_end_to_end, self.run_scaling,
                     self.run_threads, self.run_sizes):
            meter = LoadMeter()
            part()
            self.result["load"][part.__name__] = meter.read()
        self.result["load"]["whole run"] = load.read()
        busy = self.result["load"]["whole run"].get("others_cpus")
        if busy is not None and busy > BUSY_CPUS:
            extra = (f"; with {self.plan.threads} threads per engine, an engine that needs every thread at each "
                     "barrier (PyTorch's OpenMP) suffers most: compare the threads=1 rows"
                     if self.plan.threads > 1 else "")
            self.note(f"other processes kept {busy:.2f} of the {os.cpu_count()} CPUs busy during the run (see "
                      f"'Machine load'){extra}")
        self.goal()
        self.memory("end")
        self.result["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
        return self.result
