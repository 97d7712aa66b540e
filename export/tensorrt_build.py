"""TensorRT engines for an export's graphs, built through polygraphy's TensorRT API on this machine's GPU.

    built = build_engines(Manifest.load("artifacts"))      # needs a GPU, TensorRT 10+ and polygraphy
    built["llm"].engine                                     # the engine file in the engine cache

Torch-free. TensorRT (and polygraphy's TensorRT backend) is imported only after `probe_tensorrt` found a GPU
(see `tensorrt_probe`): without one this raises `TensorRTUnavailable` with one line and nothing TensorRT was
created.

Each manifest graph gets one engine: one optimization profile from the manifest's named dimensions
(`manifest.dims`, min/opt/max), a tactic timing cache shared by all builds (default:
`timing-trt<version>-<sm_XY>.cache` in the engine cache folder), and the cache of `tpo.engine_cache` (key:
ONNX sha256 x TensorRT version x compute capability x precision x profile), so a rerun reuses what it has.

Precision policy:
- fp32 graphs: a weakly typed network, no reduced-precision flags (TF32 off), so TensorRT computes what
  ONNX Runtime computed in the parity gate.
- fp16 graphs that carry their own types (float16 tensors, with explicit Casts around the fp32 islands,
  as the fp16 export writes them): a *strongly typed* network. TensorRT then keeps every tensor in its
  ONNX type, so the fp32 islands stay fp32 exactly as ONNX Runtime ran them; the fp16 builder flag is
  neither needed nor allowed there.
- fp16 graphs that are still all-float32: the fp16 builder flag on a weakly typed network; the graph's
  `fp32_islands` (ONNX op types such as "LayerNormalization", or node-name fragments) select ONNX nodes,
  and the TensorRT layers named after those nodes are pinned to fp32 with `precision_constraints="obey"`.
The export's fp16 conversion (float16 weights, Casts around the op types it keeps in fp32) always takes
the strongly typed path; the flag path is for hand-made or externally converted graphs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tpo.contract import Manifest, Precision
from tpo.engine_cache import (
    EngineCache,
    GpuInfo,
    Profile,
    engine_cache_key,
    profile_from_dims,
    profile_to_json,
)
from tpo.errors import TPOError

from .tensorrt_probe import TensorRTBuildError, first_line, import_tensorrt, in_folder

__all__ = ["BuiltEngine", "build_engines"]

BUILDABLE = (Precision.FP32, Precision.FP16)


@dataclass(frozen=True)
class BuiltEngine:
    graph: str
    key: str
    engine: Path
    metadata_path: Path
    metadata: dict[str, Any]
    reused: bool          # taken from the cache, not built now

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "engine": str(self.engine), "metadata": str(self.metadata_path),
                "reused": self.reused, "build_seconds": self.metadata.get("build_seconds")}


@dataclass(frozen=True)
class _Plan:
    """One graph's build, decided before TensorRT sees it: file, precision, profile, typing mode, cache key."""

    graph: str
    onnx: Path
    sha256: str
    precision: Precision
    profile: Profile
    strongly_typed: bool
    fp16_flag: bool
    fp32_islands: tuple[str, ...]
    key: str

    @property
    def mode(self) -> str:
        return "strongly typed" if self.strongly_typed else "fp16 flag" if self.fp16_flag else "fp32"


# ------------------------------------------------------------------------------------- reading the graphs
def _carries_float16(onnx_path: Path) -> bool:
    """Whether the graph types tensors as float16 itself (fp16 export with explicit fp32-island Casts)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    f16 = onnx.TensorProto.FLOAT16
    g = model.graph
    if any(t.data_type == f16 for t in g.initializer):
        return True
    if any(vi.type.tensor_type.elem_type == f16 for vi in [*g.input, *g.output] if vi.type.HasField("tensor_type")):
        return True
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == f16:
                return True
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type == f16:
                return True
    return False


def _island_nodes(onnx_path: Path, islands: tuple[str, ...]) -> set[str]:
    """Names of the ONNX nodes an island selects: by op type, else by a fragment of the node name."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    wanted = set(islands)
    return {n.name for n in graph.node if n.name and (n.op_type in wanted or any(i in n.name for i in islands))}


def _plan(manifest: Manifest, gpu: GpuInfo, trt_version: str, graphs: Iterable[str] | None) -> list[_Plan]:
    """Every build decided up front, so a missing file or dimension fails before the first (long) build."""
    plans = []
    for name in (list(graphs) if graphs is not None else list(manifest.graphs)):
        entry = manifest.graphs.get(name)
        if entry is None:
            raise TPOError(f"tensorrt target: the manifest has no graph {name!r} (has {sorted(manifest.graphs)})")
        path = manifest.path_of(entry)
        if not path.is_file():
            raise TPOError(f"{path}: missing (graph {name} of the manifest in {manifest.root})")
        precision = entry.precision
        if precision not in BUILDABLE:
            raise TPOError(f"graph {name}: precision {precision.value!r} has no TensorRT build here "
                           f"({', '.join(p.value for p in BUILDABLE)})")
        profile = profile_from_dims(entry.inputs, manifest.dims, name)
        typed16 = precision is Precision.FP16 and _carries_float16(path)
        key = engine_cache_key(entry.sha256, trt_version, gpu.compute_capability, precision, profile)
        plans.append(_Plan(name, path, entry.sha256, precision, profile, strongly_typed=typed16,
                           fp16_flag=precision is Precision.FP16 and not typed16,
                           fp32_islands=tuple(str(i) for i in entry.fp32_islands), key=key))
    return plans


# ------------------------------------------------------------------------------------------------ building
def _pin_islands(trt, network, nodes: set[str]) -> int:
    """Pin the layers made from `nodes` (TensorRT names a node's layers after it) to float32."""
    floats = {trt.float32, trt.float16}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        origin = f"{layer.name} {getattr(layer, 'metadata', '') or ''}"
        if not any(node in origin for node in nodes):
            continue
        if not all(layer.get_output(j).dtype in floats for j in range(layer.num_outputs)):
            continue   # shape/index layers: nothing to pin
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _build_one(plan: _Plan, trt, timing_cache: Path | None, progress: Callable[[str], None]) -> tuple[bytes, dict]:
    """Parse and build one engine with polygraphy; returns (engine bytes, build facts)."""
    from polygraphy.backend.trt import CreateConfig, engine_bytes_from_network, network_from_onnx_path
    from polygraphy.backend.trt import Profile as TrtProfile
    from polygraphy.exception import PolygraphyException

    facts: dict[str, Any] = {}
    try:
        builder, network, parser = network_from_onnx_path(str(plan.onnx), strongly_typed=plan.strongly_typed)
    except PolygraphyException as e:
        raise TensorRTBuildError(f"graph {plan.graph}: TensorRT's ONNX parser rejected {plan.onnx.name}: "
                                 f"{first_line(e)} (see tpo-export --check-tensorrt)") from None
    constraints = None
    if plan.fp16_flag and plan.fp32_islands:
        pinned = _pin_islands(trt, network, _island_nodes(plan.onnx, plan.fp32_islands))
        facts["fp32_layers_pinned"] = pinned
        if pinned:
            constraints = "obey"
        else:
            progress(f"graph {plan.graph}: no layer matched its fp32 islands {list(plan.fp32_islands)}")
    profile = TrtProfile()
    for name, (lo, opt, hi) in plan.profile.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    load_cache = str(timing_cache) if timing_cache is not None and timing_cache.is_file() else None
    config = CreateConfig(fp16=plan.fp16_flag, tf32=False, profiles=[profile], load_timing_cache=load_cache,
                          precision_constraints=constraints)
    try:
        data = engine_bytes_from_network((builder, network, parser), config=config,
                                         save_timing_cache=str(timing_cache) if timing_cache else None)
    except PolygraphyException as e:
        raise TensorRTBuildError(f"graph {plan.graph}: TensorRT could not build an engine: {first_line(e)}") from None
    return bytes(memoryview(data)), facts


def _polygraphy_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("polygraphy")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class _Builder:
    """What every build of one `build_engines` call shares: the GPU, TensorRT, the caches."""

    gpu: GpuInfo
    trt: Any
    cache: EngineCache
    timing: Path
    say: Callable[[str], None]
    polygraphy_version: str | None

    @property
    def trt_version(self) -> str:
        return str(self.trt.__version__)

    def build(self, plan: _Plan) -> BuiltEngine:
        self.say(f"graph {plan.graph}: building a TensorRT {self.trt_version} engine for "
                 f"{self.gpu.compute_capability} ({plan.mode})")
        start = time.perf_counter()
        data, facts = _build_one(plan, self.trt, self.timing, self.say)
        seconds = time.perf_counter() - start
        entry = self.cache.store(plan.key, data, self.metadata(plan, seconds, facts))
        self.say(f"graph {plan.graph}: {entry.engine.name} ({len(data) / 2**20:.1f} MiB, {seconds:.1f} s)")
        return BuiltEngine(plan.graph, plan.key, entry.engine, entry.metadata_path, entry.metadata, False)

    def metadata(self, plan: _Plan, seconds: float, facts: dict[str, Any]) -> dict[str, Any]:
        """The engine's side file: what it was built from and how (the runtime and humans read it)."""
        return {
            "graph": plan.graph, "onnx_file": plan.onnx.name, "onnx_sha256": plan.sha256,
            "tensorrt_version": self.trt_version, "compute_capability": self.gpu.compute_capability,
            "gpu": self.gpu.name, "precision": plan.precision.value, "strongly_typed": plan.strongly_typed,
            "fp16_flag": plan.fp16_flag, "fp32_islands": list(plan.fp32_islands),
            "profiles": [profile_to_json(plan.profile)], "build_seconds": round(seconds, 3),
            "polygraphy_version": self.polygraphy_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **facts,
        }


def build_engines(manifest: Manifest, root: str | Path | None = None, *, cache: EngineCache | None = None,
                  timing_cache: str | Path | None = None, progress: Callable[[str], None] | None = None,
                  graphs: Iterable[str] | None = None, device: int = 0, rebuild: bool = False) -> dict[str, BuiltEngine]:
    """Build (or take from `cache`) one TensorRT engine per graph of `manifest` (all, or `graphs`); graph
    name -> BuiltEngine. The graph files are read from `root` (default: the folder the manifest was loaded
    from; pass it for a manifest made in memory, as the exporter's).

    Probes the GPU first, then TensorRT: without them this raises `TensorRTUnavailable` before anything
    TensorRT is imported. `timing_cache` (default: one per TensorRT version and GPU architecture in the
    engine cache folder) is read and extended by every build; `rebuild` ignores cached engines."""
    manifest = in_folder(manifest, root, "build_engines")
    gpu, trt = import_tensorrt(device)
    if device:
        from cuda.bindings import runtime as cudart

        cudart.cudaSetDevice(device)
    cache = cache or EngineCache()
    trt_version = str(trt.__version__)
    timing = cache.root / f"timing-trt{trt_version}-{gpu.compute_capability}.cache"
    if timing_cache is not None:
        timing = Path(timing_cache)
    timing.parent.mkdir(parents=True, exist_ok=True)
    plans = _plan(manifest, gpu, trt_version, graphs)
    builder = _Builder(gpu, trt, cache, timing, progress or (lambda _msg: None), _polygraphy_version())
    built: dict[str, BuiltEngine] = {}
    for plan in plans:
        hit = None if rebuild else cache.lookup(plan.key)
        if hit is None:
            built[plan.graph] = builder.build(plan)
            continue
        builder.say(f"graph {plan.graph}: engine {hit.engine.name} from the cache")
        built[plan.graph] = BuiltEngine(plan.graph, plan.key, hit.engine, hit.metadata_path, hit.metadata, True)
    return built
