"""The `tensorrt` backend: engines from the export's engine cache, run with TensorRT on one CUDA device.

    from tpo.contract import graphs as G
    backend = TensorRTBackend(dims=manifest.dims)         # or open_backend("tensorrt", dims=manifest.dims)
    runner = backend.load(manifest.graph(G.LLM.name))     # the engine built for this graph, GPU, TensorRT
    out = G.LLM.outputs_of(runner.run(G.LLM.feed(past=past, ...)))   # numpy in, numpy out

Torch-free. tensorrt and cuda-bindings are imported only inside `TensorRTBackend()`, after the GPU probe
(`tpo.engine_cache.gpu_probe`, driver API only) found a device: without one, or without TensorRT, the
constructor raises `BackendUnavailable` with one line and nothing TensorRT was created.

Engines are found in the cache (`tpo.engine_cache`, $TPO_ENGINE_CACHE by default) by the same key the
export built them under: ONNX sha256 x TensorRT version x compute capability x precision x profile. With
`dims` (the manifest's named-dimension ranges) the key is computed exactly; without, the newest engine for
this graph, TensorRT and GPU is taken whatever its profile. No engine: one line saying to run
`tpo-export --targets tensorrt`. The engine's bytes are checked against the sha256 in its side file.

Device memory comes from the CUDA driver (cuMemAlloc, cuMemcpyHtoDAsync/DtoHAsync on one stream) in the
device's primary context, the one TensorRT's CUDA runtime uses. Buffers are kept per tensor and reused
while they are large enough; input shapes are set only when they change.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tpo import engine_cache as _cache
from tpo.contract import Dim, GraphEntry
from tpo.engine_cache import (
    CachedEngine,
    EngineCache,
    GpuInfo,
    engine_cache_key,
    module_available,
    profile_from_dims,
)
from tpo.errors import InputError, TPOError

from .engine import BackendUnavailable

EXPORT_HINT = "run `tpo-export --targets tensorrt` on this machine (or point $TPO_ENGINE_CACHE at its engines)"


def find_engine(cache: EngineCache, graph: GraphEntry, trt_version: str, compute_capability: str,
                dims: Mapping[str, Dim] | None = None) -> CachedEngine:
    """The cached engine for `graph` on this TensorRT and GPU, or BackendUnavailable with one line.
    `dims`: the manifest's named-dimension ranges, which give the exact profile the export built for."""
    what = (f"{Path(graph.file).name} (sha256 {graph.sha256[:12]}..., TensorRT {trt_version}, "
            f"{compute_capability}, {graph.precision.value})")
    if dims is not None:
        profile = profile_from_dims(graph.inputs, dims, graph.name)
        key = engine_cache_key(graph.sha256, trt_version, compute_capability, graph.precision, profile)
        entry = cache.lookup(key)
        if entry is None:
            raise BackendUnavailable(f"graph {graph.name}: no TensorRT engine {key} in {cache.root} for {what}; "
                                     f"{EXPORT_HINT}")
        return entry
    hits = cache.find(graph.sha256, trt_version, compute_capability, graph.precision)
    if not hits:
        raise BackendUnavailable(f"graph {graph.name}: no TensorRT engine in {cache.root} for {what}; {EXPORT_HINT}")
    return hits[0]


class _Cuda:
    """The few driver calls the backend needs, in the device's primary context, on one stream."""

    def __init__(self, driver, ordinal: int, label: str):
        self.driver = driver
        self.label = label
        self.device = self._call(driver.cuDeviceGet, ordinal)
        self.context = self._call(driver.cuDevicePrimaryCtxRetain, self.device)
        self._call(driver.cuCtxSetCurrent, self.context)
        self.stream = self._call(driver.cuStreamCreate, 0)
        self.handle = int(self.stream)

    def _call(self, fn, *args):
        err, *values = fn(*args)
        if err != self.driver.CUresult.CUDA_SUCCESS:
            raise TPOError(f"CUDA driver call {fn.__name__} failed: {getattr(err, 'name', err)} on {self.label}")
        return values[0] if len(values) == 1 else (values or None)

    def current(self) -> None:
        if int(self._call(self.driver.cuCtxGetCurrent)) != int(self.context):
            self._call(self.driver.cuCtxSetCurrent, self.context)

    def alloc(self, nbytes: int) -> int:
        self.current()
        return int(self._call(self.driver.cuMemAlloc, max(int(nbytes), 1)))

    def free(self, ptr: int) -> None:
        self.current()
        self._call(self.driver.cuMemFree, ptr)

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        if array.nbytes:
            self._call(self.driver.cuMemcpyHtoDAsync, ptr, array.ctypes.data, array.nbytes, self.stream)

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        if array.nbytes:
            self._call(self.driver.cuMemcpyDtoHAsync, array.ctypes.data, ptr, array.nbytes, self.stream)

    def synchronize(self) -> None:
        self._call(self.driver.cuStreamSynchronize, self.stream)

    def close(self) -> None:
        self.driver.cuStreamDestroy(self.stream)
        self.driver.cuDevicePrimaryCtxRelease(self.device)


class TensorRTGraph:
    """One engine with its execution context and device buffers; `run` maps numpy inputs to numpy outputs."""

    def __init__(self, graph: GraphEntry, engine, trt, cuda: _Cuda, entry: CachedEngine):
        self.name = graph.name
        self.engine = engine
        self.entry = entry
        self.trt = trt
        self.cuda = cuda
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TPOError(f"graph {graph.name}: TensorRT could not create an execution context for "
                           f"{entry.engine.name} (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = trt.TensorIOMode
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == mode.INPUT]
        engine_outputs = {n for n in names if engine.get_tensor_mode(n) == mode.OUTPUT}
        self.output_names = [s.name for s in graph.outputs if s.name in engine_outputs]
        missing = [s.name for s in graph.outputs if s.name not in engine_outputs]
        if missing:
            raise TPOError(f"graph {graph.name}: engine {entry.engine.name} lacks output(s) {missing}; rebuild it")
        self.output_names += sorted(engine_outputs - set(self.output_names))
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.host_inputs = {n for n in self.input_names if engine.is_shape_inference_io(n)}
        self.limits = {n: tuple(tuple(d) for d in engine.get_tensor_profile_shape(n, 0))
                       for n in self.input_names if n not in self.host_inputs}
        self.buffers: dict[str, tuple[int, int]] = {}     # name -> (device pointer, capacity in bytes)
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.seconds = 0.0      # execution time incl. copies, summed (the runtime's latency report reads it)
        self.calls = 0

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self.buffers.get(name, (0, 0))
        if capacity < nbytes or not ptr:
            if ptr:
                self.cuda.free(ptr)
            capacity = max(int(nbytes), 256)
            ptr = self.cuda.alloc(capacity)
            self.buffers[name] = (ptr, capacity)
        return ptr

    def _bind(self, name: str, ptr: int) -> None:
        if self.addresses.get(name) != ptr:
            if not self.context.set_tensor_address(name, ptr):
                raise TPOError(f"graph {self.name}: TensorRT refused the address of tensor {name!r}")
            self.addresses[name] = ptr

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if self.shapes.get(name) == shape:
            return
        limits = self.limits.get(name)
        if limits is not None:
            lo, _, hi = limits
            if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi, strict=True)):
                raise InputError(f"graph {self.name}: input {name!r} has shape {list(shape)}, outside the engine's "
                                 f"profile {list(lo)}..{list(hi)}; rebuild the engine with wider dims")
        if not self.context.set_input_shape(name, shape):
            raise InputError(f"graph {self.name}: TensorRT refused shape {list(shape)} for input {name!r}")
        self.shapes[name] = shape

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise TPOError(f"graph {self.name}: missing input(s) {sorted(missing)}")
        self.cuda.current()
        start = time.perf_counter()
        keep = []   # host arrays must outlive the asynchronous copies
        for name in self.input_names:
            array = np.ascontiguousarray(inputs[name], dtype=self.dtypes[name])
            keep.append(array)
            self._set_shape(name, tuple(int(d) for d in array.shape))
            if name in self.host_inputs:      # shape tensors are read from host memory
                self._bind(name, array.ctypes.data)
                continue
            ptr = self._buffer(name, array.nbytes)
            self._bind(name, ptr)
            self.cuda.to_device(ptr, array)
        outputs = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TPOError(f"graph {self.name}: output {name!r} has a data-dependent shape {list(shape)}, "
                               f"which this backend does not handle")
            out = np.empty(shape, dtype=self.dtypes[name])
            self._bind(name, self._buffer(name, out.nbytes))
            outputs[name] = out
        if not self.context.execute_async_v3(self.cuda.handle):
            raise TPOError(f"graph {self.name}: TensorRT execution failed (see TensorRT's log above)")
        for name, out in outputs.items():
            self.cuda.to_host(out, self.buffers[name][0])
        self.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        del keep
        return outputs

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers.clear()
        self.addresses.clear()
        self.context = None
        self.engine = None

    def __del__(self):
        with contextlib.suppress(Exception):   # interpreter shutdown: the driver may be gone already
            if self.buffers:
                self.close()


class TensorRTBackend:
    """TensorRT on CUDA device `device`, engines from `cache_dir` (default: the export's engine cache)."""

    name = "tensorrt"

    def __init__(self, cache_dir: str | Path | None = None, device: int = 0,
                 dims: Mapping[str, Dim] | None = None, verify: bool = True):
        gpu = _cache.gpu_probe(device)
        if isinstance(gpu, str):
            raise BackendUnavailable(f"backend tensorrt: no GPU ({gpu})")
        if not module_available("tensorrt"):
            raise BackendUnavailable(
                "backend tensorrt: TensorRT is not installed (pip install tensorrt on a machine with NVIDIA's "
                "index, or JetPack's python3-libnvinfer on Jetson)"
            )
        try:
            import tensorrt as trt
            from cuda.bindings import driver
        except Exception as e:   # a broken install: missing libnvinfer, CUDA mismatch
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackendUnavailable(f"backend tensorrt: TensorRT failed to import ({first})") from None
        self.gpu: GpuInfo = gpu
        self.trt = trt
        self.trt_version = str(trt.__version__)
        self.cache = EngineCache(cache_dir)
        self.dims = dims
        self.verify = verify
        self.cuda = _Cuda(driver, device, str(gpu))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.description = f"tensorrt {self.trt_version} on {gpu}"

    def load(self, graph: GraphEntry) -> TensorRTGraph:
        entry = find_engine(self.cache, graph, self.trt_version, self.gpu.compute_capability, self.dims)
        data = entry.read(verify=self.verify)
        self.cuda.current()
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendUnavailable(f"graph {graph.name}: TensorRT {self.trt_version} could not deserialize "
                                     f"{entry.engine}; delete it and its .json, then {EXPORT_HINT}")
        return TensorRTGraph(graph, engine, self.trt, self.cuda, entry)
