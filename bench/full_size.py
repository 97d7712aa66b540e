"""`tpo-bench --artifacts DIR --full-size`: the release-size export measured on this machine, next to its floors,
and projected onto Jetson AGX Orin 64 GB, Jetson Orin NX 16 GB and H100.

Stages (each through the runtime's own ONNX Runtime backend, intra-op spinning off; inputs from the contract's
tensor domains at the sizes the runtime feeds: 16 frames, 3136 vision tokens, one object, every memory slot
valid, i.e. a tracked frame in its steady state):
- vision: `vision_encoder` (16 frames at 224 px) + `connector` (3136 tokens -> 96);
- the LLM: prefill of a `prompt`-token prompt and one decode step over it, reported per token. The full
  32-layer graph runs only with `llm="full"` (ONNX Runtime must hold its 14.5 GB of fp16 weights plus the fp32
  copies its CPU kernels need); by default a full-width graph cut to 1 and to 2 layers (written from the
  export's checkpoint by the streamed exporter) is timed, and 32 layers are EXTRAPOLATED as
  t(1) + 31 x (t(2) - t(1)), labelled so in the report;
- heads: `task_router`, `box_encoder`, `temporal_head`, `mask_decoder_prompted` (the first frame's decoder; the
  trigger is forced: the hidden state is fed straight to the router, random weights never emit one);
- the tracking step at 1024 px: `mask_image_encoder` + `memory_attention` + `mask_decoder_tracked` +
  `memory_encoder`.
Each stage's floor comes from its graphs (`floor.count_model` at the fed shapes, weights from the file's
dtypes): max(FLOPs / peak FLOP/s, bytes / bandwidth), with this machine's measured peaks, and with each device's
vendor peaks (`DEVICES`) for the projection. Load time per graph and the process's peak resident memory are
recorded; report.json and report.md go to --out.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpo.contract import GraphEntry, Manifest
from tpo.contract import graphs as G

from . import floor
from .measure import rss_mb


@dataclass(frozen=True)
class Device:
    name: str
    fp16_tflops: float        # dense fp16 tensor-core peak
    bandwidth_gbs: float      # DRAM bandwidth
    memory_gb: float          # physical memory
    usable_gb: float          # what a process can count on (OS, CUDA context and display taken out)
    source: str


# Vendor figures (NVIDIA data sheets); dense fp16 = a quarter of the sparse INT8 TOPS of the GPU (Ampere tensor
# cores: sparsity doubles, INT8 doubles fp16). The Jetsons share their memory between CPU and GPU.
DEVICES = (
    Device("Jetson AGX Orin 64GB", 42.5, 204.8, 64.0, 60.0,
           "Jetson AGX Orin Series technical brief: GPU 2048 CUDA cores, 64 tensor cores, 1.3 GHz, 170 sparse INT8 "
           "TOPS (GPU) -> 42.5 dense fp16 TFLOPS; 256-bit LPDDR5 204.8 GB/s; 64 GB shared"),
    Device("Jetson Orin NX 16GB", 15.0, 102.4, 16.0, 13.5,
           "Jetson Orin NX data sheet: GPU 1024 CUDA cores, 32 tensor cores, 918 MHz (half the SMs of AGX Orin at "
           "0.71x the clock -> 60 sparse INT8 TOPS, 15 dense fp16 TFLOPS); 128-bit LPDDR5 102.4 GB/s; 16 GB shared"),
    Device("H100 SXM5 80GB", 989.4, 3350.0, 80.0, 79.0,
           "H100 data sheet (SXM5): fp16 tensor 1979 TFLOPS with sparsity -> 989.4 dense; HBM3 3.35 TB/s; 80 GB"),
)
INT4_BITS = 4.125             # weight-only int4 with one fp16 scale per 128 weights
TRACK_STEP = (G.MASK_IMAGE_ENCODER, G.MEMORY_ATTENTION, G.MASK_DECODER_TRACKED, G.MEMORY_ENCODER)
VISION = (G.VISION_ENCODER, G.CONNECTOR)
HEADS = (G.TASK_ROUTER, G.BOX_ENCODER, G.TEMPORAL_HEAD, G.MASK_DECODER_PROMPTED)
SIZES = {"batch": 1, "boxes": 1, "text_tokens": 12, "clips": 32, "objects": 1}


# ------------------------------------------------------------------------------------------ inputs
def feed_for(entry: GraphEntry, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of a manifest graph at `sizes`: shapes from the entry, value domains from the contract."""
    spec = G.BY_NAME[entry.name]
    domains = {t.name: t.domain for t in spec.inputs}
    rng = np.random.default_rng(seed)
    out = {}
    for t in entry.inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in t.shape]
        domain = domains.get(t.name, "values")
        if domain == "ones":
            out[t.name] = np.ones(shape, np.int64)
        elif domain == "positions":
            past = sizes.get("past_sequence", 0)
            out[t.name] = np.broadcast_to(np.arange(past, past + shape[-1]), shape).astype(np.int64).copy()
        elif domain == "slot_times":
            out[t.name] = np.broadcast_to(np.arange(shape[-1]), shape).astype(np.int64).copy()
        elif domain == "flag":
            out[t.name] = np.array(False)
        elif domain == "valid":
            out[t.name] = np.ones(shape, bool)
        elif domain == "box_corners":
            out[t.name] = np.tile(np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), (shape[0], 1))
        else:
            out[t.name] = (rng.standard_normal(shape) * (0.02 if entry.name == G.LLM.name else 1.0)).astype(np.float32)
    return out


def llm_sizes(prompt: int, decode: bool) -> dict[str, int]:
    if decode:
        return dict(SIZES, sequence=1, past_sequence=prompt, total_sequence=prompt + 1)
    return dict(SIZES, sequence=prompt, past_sequence=0, total_sequence=prompt)


# ------------------------------------------------------------------------------------------ timing
def time_calls(fn: Callable[[], object], iters: int) -> dict:
    fn()                                       # warm-up (first-call allocations, ONNX Runtime's lazy init)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "calls": iters}


def count(entry_path: Path, feed: dict[str, np.ndarray]) -> dict:
    """FLOPs and bytes of the graph at the fed shapes (the weights' bytes as stored, never loaded)."""
    import onnx

    model = onnx.load(str(entry_path), load_external_data=False)
    return floor.count_model(model, {k: np.shape(v) for k, v in feed.items()}).to_dict()


class Stages:
    """Loads graphs once (timed), runs and counts stages, keeps the process's resident peak."""

    def __init__(self, threads: int, iters: int, log: Callable[[str], None]):
        from .backends import quiet_onnxruntime

        self.backend = quiet_onnxruntime(threads=threads)
        self.iters, self.log = iters, log
        self.loaded: dict[str, object] = {}
        self.load_s: dict[str, float] = {}

    def runner(self, entry: GraphEntry, key: str | None = None):
        key = key or entry.name
        if key not in self.loaded:
            t0 = time.perf_counter()
            self.loaded[key] = self.backend.load(entry)
            self.load_s[key] = round(time.perf_counter() - t0, 2)
            self.log(f"loaded {key} in {self.load_s[key]:.1f} s (peak RSS {rss_mb():.0f} MB)")
        return self.loaded[key]

    def drop(self, key: str) -> None:
        self.loaded.pop(key, None)

    def stage(self, entry: GraphEntry, feed: dict, key: str | None = None, iters: int | None = None) -> dict:
        r = self.runner(entry, key)
        out = time_calls(lambda: r.run(feed), iters or self.iters)
        out["count"] = count(entry.path, feed)
        self.log(f"{key or entry.name}: {out['median_s'] * 1e3:.0f} ms")
        return out


def sum_stages(parts: list[dict]) -> dict:
    keys = ("flops", "bytes", "weight_bytes", "io_bytes")
    return {"median_s": sum(p["median_s"] for p in parts), "min_s": sum(p["min_s"] for p in parts),
            "count": {k: sum(p["count"][k] for p in parts) for k in keys}}


# ------------------------------------------------------------------------------------------ the LLM
def depth_llm_entries(manifest: Manifest, folder: Path, layers: tuple[int, ...], log) -> dict[int, GraphEntry]:
    """Full-width LLM graphs cut to `layers` layers, written from the export's checkpoint by the streamed
    exporter at the export's precision (cached in `folder`)."""
    from tpo.export.exporter import graph_entry
    from tpo.export.streamed import fake_weights, write_graph
    from tpo.export.weights import CheckpointTensors, Provenance
    from tpo.model.checkpoint import build_skeleton, checkpoint_config, resolve_checkpoint
    from tpo.model.graphs import graph_defs

    ckpt = Path(manifest.model["checkpoint"]["path"])
    files = resolve_checkpoint(ckpt)
    cfg = checkpoint_config(files, None) if (ckpt / "tpo_config.json").is_file() else None
    if cfg is None:
        from tpo.model.config import config_from_dict

        cfg = config_from_dict(manifest.model["config"])
    out = {}
    reader = CheckpointTensors(files.shards)
    try:
        for n in layers:
            path = folder / f"llm-{n}-layers" / "llm.onnx"
            cfg.llm.num_layers = n
            model = build_skeleton(cfg)
            prov = Provenance(model)
            (defn,) = graph_defs(model, only=(G.LLM.name,))
            done = path.with_suffix(".json")
            if not done.is_file():
                log(f"writing a {n}-layer full-width LLM graph from {ckpt}")
                recipes = prov.graph_recipes(defn)
                fake_weights([defn.module], [recipes])
                w = write_graph(defn, recipes, reader, path, manifest.precision, manifest.opset)
                done.write_text(json.dumps(graph_entry(defn, w.path, manifest.precision, w.islands).to_json()))
            out[n] = GraphEntry.from_json(G.LLM.name, json.loads(done.read_text()), str(done), root=path.parent)
    finally:
        reader.close()
    return out


def llm_stages(st: Stages, entry: GraphEntry, prompt: int, key: str) -> dict:
    prefill = st.stage(entry, feed_for(entry, llm_sizes(prompt, False)), key=f"{key} prefill", iters=1)
    decode = st.stage(entry, feed_for(entry, llm_sizes(prompt, True)), key=f"{key} decode")
    st.drop(f"{key} prefill")
    return {"prefill": prefill, "decode": decode}


def extrapolate(one: dict, two: dict, layers: int) -> dict:
    """t(L) = t(1) + (L - 1) (t(2) - t(1)), for times and counts alike (a layer's cost is the difference)."""
    def lin(a: float, b: float) -> float:
        return a + (layers - 1) * max(b - a, 0.0)

    return {"median_s": lin(one["median_s"], two["median_s"]), "min_s": lin(one["min_s"], two["min_s"]),
            "per_layer_s": max(two["median_s"] - one["median_s"], 0.0),
            "count": {k: lin(one["count"][k], two["count"][k]) for k in ("flops", "bytes", "weight_bytes", "io_bytes")},
            "label": f"EXTRAPOLATED to {layers} layers from full-width graphs of 1 and 2 layers"}


# ------------------------------------------------------------------------------------------ floors, projection
def floors(stage: dict, peak: dict) -> dict:
    c = stage["count"]
    compute, memory = c["flops"] / peak["flops_per_s"], c["bytes"] / peak["bytes_per_s"]
    return {"floor_s": max(compute, memory), "bound": "compute" if compute >= memory else "memory",
            "x_floor": stage["median_s"] / max(compute, memory) if max(compute, memory) > 0 else None}


def projection(stages: dict[str, dict], weights: dict[str, float], kv_bytes: float) -> dict:
    """Per device: each stage's floor at fp16 and with weight-only int4 LLM weights; and what fits."""
    out = {}
    for d in DEVICES:
        rows = {}
        for name, s in stages.items():
            c = s["count"]
            int4 = name.startswith("llm")
            w4 = c["weight_bytes"] * INT4_BITS / 16 if int4 else c["weight_bytes"]
            f16 = max(c["flops"] / (d.fp16_tflops * 1e12), c["bytes"] / (d.bandwidth_gbs * 1e9))
            f4 = max(c["flops"] / (d.fp16_tflops * 1e12), (c["bytes"] - c["weight_bytes"] + w4) / (d.bandwidth_gbs * 1e9))
            rows[name] = {"fp16_ms": f16 * 1e3, "int4_llm_ms": f4 * 1e3}
        total16 = sum(weights.values()) + kv_bytes
        total4 = total16 - weights["llm"] * (1 - INT4_BITS / 16)
        out[d.name] = {"stages": rows, "memory_fp16_gb": total16 / 1e9, "memory_int4_llm_gb": total4 / 1e9,
                       "usable_gb": d.usable_gb, "fits_fp16": total16 / 1e9 <= d.usable_gb,
                       "fits_int4_llm": total4 / 1e9 <= d.usable_gb}
    return out


def weights_by_component(manifest: Manifest) -> dict[str, float]:
    """Bytes of the weights a device holds once (graphs that share weights counted once)."""
    b = {name: float(g.bytes) for name, g in manifest.graphs.items()}
    table = float(manifest.files["embeddings"].bytes or 0)
    return {"vision": b.get(G.VISION_ENCODER.name, 0) + b.get(G.CONNECTOR.name, 0),
            "llm": b.get(G.LLM.name, 0) + table,
            "sam2": b.get(G.MASK_IMAGE_ENCODER.name, 0) + b.get(G.MASK_DECODER_PROMPTED.name, 0)
            + b.get(G.MEMORY_ATTENTION.name, 0) + b.get(G.MEMORY_ENCODER.name, 0),
            "heads": b.get(G.TASK_ROUTER.name, 0) + b.get(G.BOX_ENCODER.name, 0) + b.get(G.TEMPORAL_HEAD.name, 0)}


# ------------------------------------------------------------------------------------------ the run
def run_full_size(artifacts: Path, out: Path, threads: int = 1, iters: int = 3, llm: str = "depth",
                  log: Callable[[str], None] = print, verify: bool = True) -> dict:
    t_open = time.perf_counter()
    manifest = Manifest.load(artifacts)
    if verify:
        manifest.verify()
    opened_s = time.perf_counter() - t_open
    out.mkdir(parents=True, exist_ok=True)
    peak = floor.measure_peak(quick=True)
    log(f"this machine: {peak['flops_per_s'] / 1e9:.0f} GFLOP/s fp32 matmul, {peak['bytes_per_s'] / 1e9:.1f} GB/s copy")
    st = Stages(threads, iters, log)
    gv = manifest.preprocess.mllm
    tokens = gv.num_frames * (gv.image_size // 16) ** 2
    sizes = dict(SIZES, num_vision_tokens=tokens)
    g = manifest.graph
    stages: dict[str, dict] = {}
    parts = [st.stage(g(s.name), feed_for(g(s.name), sizes)) for s in VISION]
    stages["vision_encoder"], stages["connector"] = parts
    stages["vision+connector"] = sum_stages(parts)
    for s in HEADS:
        stages[s.name] = st.stage(g(s.name), feed_for(g(s.name), sizes))
    for s in VISION + HEADS:
        st.drop(s.name)
    steps = [st.stage(g(s.name), feed_for(g(s.name), sizes)) for s in TRACK_STEP]
    stages.update({f"track: {s.name}": p for s, p in zip(TRACK_STEP, steps, strict=True)})
    stages["track step"] = sum_stages(steps)
    for s in TRACK_STEP:
        st.drop(s.name)
    prompt = manifest.dims["sequence"].opt
    layers = manifest.llm.num_layers
    if llm == "full":
        full = llm_stages(st, g(G.LLM.name), prompt, "llm")
        llm_rows = {"prefill": full["prefill"], "decode": full["decode"]}
        label = f"measured: the full {layers}-layer graph"
    else:
        entries = depth_llm_entries(manifest, out / "llm-depth", (1, 2), log)
        one = llm_stages(st, entries[1], prompt, "llm 1 layer")
        st.drop("llm 1 layer decode")
        two = llm_stages(st, entries[2], prompt, "llm 2 layers")
        st.drop("llm 2 layers decode")
        llm_rows = {k: extrapolate(one[k], two[k], layers) for k in ("prefill", "decode")}
        llm_rows["measured"] = {"1 layer": one, "2 layers": two}
        label = llm_rows["prefill"]["label"]
    stages["llm prefill"] = dict(llm_rows["prefill"], tokens=prompt, per_token_s=llm_rows["prefill"]["median_s"] / prompt)
    stages["llm decode"] = dict(llm_rows["decode"], tokens=1, per_token_s=llm_rows["decode"]["median_s"])
    for s in stages.values():
        s["floor"] = floors(s, peak)
    kv = 2 * layers * manifest.llm.num_kv_heads * manifest.llm.head_dim * 2 * (manifest.dims["total_sequence"].max)
    weights = weights_by_component(manifest)
    proj = projection({k: v for k, v in stages.items() if k in PROJECTED}, weights, kv)
    report = {"artifacts": str(artifacts), "precision": manifest.precision.value, "threads": threads,
              "open_and_verify_s": round(opened_s, 1), "load_s": st.load_s, "peak_rss_mb": rss_mb(),
              "machine_peak": peak, "llm_label": label, "prompt_tokens": prompt, "stages": stages,
              "weights_gb": {k: v / 1e9 for k, v in weights.items()}, "kv_cache_gb_at_max": kv / 1e9,
              "devices": [d.__dict__ for d in DEVICES], "projection": proj}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "report.md").write_text(markdown(report))
    return report


PROJECTED = ("vision+connector", "llm prefill", "llm decode", "task_router", "mask_decoder_prompted", "temporal_head",
             "track step")


def markdown(r: dict) -> str:
    mp = r["machine_peak"]
    lines = [f"# Full-size run: {r['artifacts']} ({r['precision']}, {r['threads']} thread(s))", "",
             f"Machine peak (measured): {mp['flops_per_s'] / 1e9:.0f} GFLOP/s fp32 matmul, "
             f"{mp['bytes_per_s'] / 1e9:.1f} GB/s memcpy. Peak resident memory {r['peak_rss_mb']:.0f} MB; manifest "
             f"open + sha256 of every file {r['open_and_verify_s']:.0f} s. LLM: {r['llm_label']}.", "",
             "| stage | measured | floor | bound | x floor | GFLOP | GB moved |", "|---|---|---|---|---|---|---|"]
    for name, s in r["stages"].items():
        f = s["floor"]
        per = f" ({s['per_token_s'] * 1e3:.0f} ms/token)" if "per_token_s" in s else ""
        lines.append(f"| {name} | {s['median_s'] * 1e3:.0f} ms{per} | {f['floor_s'] * 1e3:.1f} ms | {f['bound']} | "
                     f"{(f['x_floor'] or 0):.1f} | {s['count']['flops'] / 1e9:.1f} | {s['count']['bytes'] / 1e9:.3f} |")
    lines += ["", "Load time per graph (s): " + ", ".join(f"{k} {v}" for k, v in r["load_s"].items()), "",
              "## Projection (floors from the graphs' FLOPs and bytes at vendor peaks)", "",
              "| stage | " + " | ".join(f"{d} fp16 / int4-LLM" for d in r["projection"]) + " |",
              "|---|" + "---|" * len(r["projection"])]
    for name in PROJECTED:
        cells = [f"{p['stages'][name]['fp16_ms']:.2f} / {p['stages'][name]['int4_llm_ms']:.2f} ms"
                 for p in r["projection"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| device | weights + KV at fp16 | with int4 LLM | usable | fp16 fits | int4 LLM fits |",
              "|---|---|---|---|---|---|"]
    for dname, p in r["projection"].items():
        lines.append(f"| {dname} | {p['memory_fp16_gb']:.1f} GB | {p['memory_int4_llm_gb']:.1f} GB | "
                     f"{p['usable_gb']:.1f} GB | {'yes' if p['fits_fp16'] else 'no'} | "
                     f"{'yes' if p['fits_int4_llm'] else 'no'} |")
    lines += ["", "Device figures: " + "; ".join(f"{d['name']}: {d['source']}" for d in r["devices"]), ""]
    return "\n".join(lines)
