"""The tensorrt backend without TensorRT: one-line errors before anything TensorRT is imported, the
engine lookup by the export's cache key, and no dependency on tpo.export, torch or the backend registry."""

from __future__ import annotations

import ctypes
import hashlib
import importlib.abc
import subprocess
import sys
import types

import numpy as np
import pytest

from tpo import engine_cache
from tpo.contract import Dim, GraphEntry, Precision, TensorSpec
from tpo.contract import graphs as G
from tpo.engine_cache import EngineCache, GpuInfo, engine_cache_key
from tpo.errors import CheckpointError, InputError, TPOError
from tpo.runtime.backend import open_backend
from tpo.runtime.engine import BackendUnavailable
from tpo.runtime.tensorrt_backend import TensorRTBackend, find_engine

SHA = hashlib.sha256(b"llm graph").hexdigest()
DIMS = {"batch": Dim(1, 1, 4), "seq": Dim(1, 128, 1024)}
EMBEDS = G.LLM.input_names[0]
GRAPH = GraphEntry(G.LLM.name, "llm.onnx", SHA, 1 << 20, Precision.FP16,
                   (TensorSpec(EMBEDS, "float16", ("batch", "seq", 64)),),
                   (TensorSpec(G.LLM.output_names[0], "float16", ("batch", "seq", 100)),))
FAKE_GPU = GpuInfo(0, "Fake Orin", 8, 7, 12060)


class _ImportRecorder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorrt", "polygraphy"):
            self.asked.append(name)
        return None


@pytest.fixture
def import_recorder(monkeypatch):
    recorder = _ImportRecorder()
    monkeypatch.setattr(sys, "meta_path", [recorder, *sys.meta_path])
    for name in [m for m in sys.modules if m.split(".")[0] in ("tensorrt", "polygraphy")]:
        monkeypatch.delitem(sys.modules, name)
    return recorder


def test_no_gpu_is_one_line_and_imports_nothing(monkeypatch, import_recorder):
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: "cuInit failed: CUDA_ERROR_NO_DEVICE")
    with pytest.raises(BackendUnavailable) as err:
        TensorRTBackend()
    assert str(err.value) == "backend tensorrt: no GPU (cuInit failed: CUDA_ERROR_NO_DEVICE)"
    with pytest.raises(BackendUnavailable, match=r"^backend tensorrt: no GPU \(cuInit failed"):
        open_backend("tensorrt", cache_dir="/nonexistent")
    assert import_recorder.asked == []


def test_on_this_machine_without_gpu(import_recorder):
    reason = engine_cache.gpu_probe()
    if not isinstance(reason, str):
        pytest.skip(f"this machine has a GPU ({reason}); the no-GPU message cannot be shown")
    with pytest.raises(BackendUnavailable) as err:
        TensorRTBackend()
    assert str(err.value) == f"backend tensorrt: no GPU ({reason})"
    assert import_recorder.asked == []


def test_gpu_without_tensorrt(monkeypatch):
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: FAKE_GPU)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable) as err:
        TensorRTBackend()
    assert str(err.value).startswith("backend tensorrt: TensorRT is not installed (")
    assert "\n" not in str(err.value)


def test_find_engine_by_the_export_key(tmp_path):
    cache = EngineCache(tmp_path)
    with pytest.raises(BackendUnavailable) as err:
        find_engine(cache, GRAPH, "10.8.0.43", "sm_87", DIMS)
    message = str(err.value)
    assert message.startswith("graph llm: no TensorRT engine ") and "run `tpo-export --targets tensorrt`" in message
    assert f"for llm.onnx (sha256 {SHA[:12]}..., TensorRT 10.8.0.43, sm_87, fp16)" in message
    assert "\n" not in message
    with pytest.raises(BackendUnavailable, match="run `tpo-export --targets tensorrt`"):
        find_engine(cache, GRAPH, "10.8.0.43", "sm_87")

    profile = {EMBEDS: ((1, 1, 64), (1, 128, 64), (4, 1024, 64))}
    key = engine_cache_key(SHA, "10.8.0.43", "sm_87", "fp16", profile)
    meta = {"onnx_sha256": SHA, "tensorrt_version": "10.8.0.43", "compute_capability": "sm_87",
            "precision": "fp16", "created": "2025-06-01T00:00:00+00:00"}
    cache.store(key, b"plan", meta)
    assert find_engine(cache, GRAPH, "10.8.0.43", "sm_87", DIMS).key == key
    assert find_engine(cache, GRAPH, "10.8.0.43", "sm_87").key == key       # without dims: by metadata
    with pytest.raises(BackendUnavailable):                                  # other TensorRT: not usable
        find_engine(cache, GRAPH, "10.9.0.34", "sm_87", DIMS)
    with pytest.raises(BackendUnavailable):                                  # other GPU architecture
        find_engine(cache, GRAPH, "10.8.0.43", "sm_90")
    newer_key = engine_cache_key(SHA, "10.8.0.43", "sm_87", "fp16", {EMBEDS: ((1, 1, 64),) * 3})
    cache.store(newer_key, b"plan2", {**meta, "created": "2025-07-01T00:00:00+00:00"})
    assert find_engine(cache, GRAPH, "10.8.0.43", "sm_87").key == newer_key  # newest first
    assert find_engine(cache, GRAPH, "10.8.0.43", "sm_87", DIMS).key == key  # exact profile with dims


def test_runtime_side_imports_neither_export_nor_torch_nor_the_registry():
    """No import cycle: the backend takes its interface and error from tpo.runtime.engine, and only the
    registry (tpo.runtime.backend) knows the backend, lazily."""
    code = ("import sys, tpo.runtime.tensorrt_backend, tpo.engine_cache; "
            "bad = [m for m in sys.modules if m.startswith(('tpo.export', 'torch', 'tensorrt', 'polygraphy', "
            "'tpo.runtime.backend', 'tpo.manifest'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------- the run loop, on stand-ins for TensorRT/CUDA
class _FakeDriver:
    """Device memory as host bytearrays; enough of the driver API for the backend."""

    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self):
        self.memory: dict[int, bytearray] = {}
        self.next = 0x1000
        self.allocs = 0
        self.current = None

    def _ok(self, *values):
        return (0, *values)

    def cuDeviceGet(self, ordinal):
        return self._ok(ordinal)

    def cuDevicePrimaryCtxRetain(self, dev):
        return self._ok(77)

    def cuDevicePrimaryCtxRelease(self, dev):
        return self._ok()

    def cuCtxSetCurrent(self, ctx):
        self.current = ctx
        return self._ok()

    def cuCtxGetCurrent(self):
        return self._ok(self.current or 0)

    def cuStreamCreate(self, flags):
        return self._ok(5)

    def cuStreamDestroy(self, stream):
        return self._ok()

    def cuStreamSynchronize(self, stream):
        return self._ok()

    def cuMemAlloc(self, nbytes):
        ptr, self.next = self.next, self.next + nbytes + 0x100
        self.memory[ptr] = bytearray(nbytes)
        self.allocs += 1
        return self._ok(ptr)

    def cuMemFree(self, ptr):
        del self.memory[ptr]
        return self._ok()

    def cuMemcpyHtoDAsync(self, dst, src, nbytes, stream):
        ctypes.memmove((ctypes.c_char * nbytes).from_buffer(self.memory[dst]), src, nbytes)
        return self._ok()

    def cuMemcpyDtoHAsync(self, dst, src, nbytes, stream):
        ctypes.memmove(dst, (ctypes.c_char * nbytes).from_buffer(self.memory[src]), nbytes)
        return self._ok()


def _fake_tensorrt(driver: _FakeDriver):
    """A module with a 'doubling' engine: y = 2 * x, profile batch 1..4 on axis 0."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.8.0.43"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: dtype
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})

    class Context:
        def __init__(self):
            self.shapes, self.addresses, self.shape_sets = {}, {}, 0

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            self.shape_sets += 1
            return True

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shapes["x"])) * 2
            x = np.frombuffer(bytes(driver.memory[self.addresses["x"]][:n]), np.float16)
            driver.memory[self.addresses["y"]][:n] = (x * 2).astype(np.float16).tobytes()
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("x", "y")[i]

        def get_tensor_mode(self, name):
            return "in" if name == "x" else "out"

        def get_tensor_dtype(self, name):
            return np.float16

        def is_shape_inference_io(self, name):
            return False

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 3), (2, 3), (4, 3)]

        def create_execution_context(self):
            self.context = Context()
            return self.context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"doubling plan" else None

    trt.Runtime = Runtime
    return trt


def test_run_loop_reuses_buffers_and_checks_shapes(tmp_path, monkeypatch):
    import cuda.bindings

    driver = _FakeDriver()
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: FAKE_GPU)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(driver))
    monkeypatch.setattr(cuda.bindings, "driver", driver, raising=False)
    graph = GraphEntry("head", "head.onnx", SHA, 1024, Precision.FP16, (TensorSpec("x", "float16", ("b", 3)),),
                       (TensorSpec("y", "float16", ("b", 3)),))
    dims = {"b": Dim(1, 2, 4)}
    key = engine_cache_key(SHA, "10.8.0.43", "sm_87", "fp16", {"x": ((1, 3), (2, 3), (4, 3))})
    cache = EngineCache(tmp_path)
    cache.store(key, b"doubling plan", {"onnx_sha256": SHA, "tensorrt_version": "10.8.0.43",
                                        "compute_capability": "sm_87", "precision": "fp16"})

    backend = TensorRTBackend(cache_dir=tmp_path, dims=dims)
    assert backend.description == "tensorrt 10.8.0.43 on Fake Orin (sm_87, driver CUDA 12.6)"
    runner = backend.load(graph)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = runner.run({"x": x})
    assert out["y"].dtype == np.float16 and np.array_equal(out["y"], 2 * x)
    allocs = driver.allocs
    runner.run({"x": x + 1})                                  # same shape: no new buffers, no new shape
    assert driver.allocs == allocs and runner.engine.context.shape_sets == 1 and runner.calls == 2
    big = np.ones((4, 3), np.float16)
    assert np.array_equal(runner.run({"x": big})["y"], 2 * big)
    assert runner.engine.context.shape_sets == 2
    with pytest.raises(InputError, match=r"input 'x' has shape \[5, 3\], outside the engine's profile"):
        runner.run({"x": np.ones((5, 3), np.float16)})
    with pytest.raises(TPOError, match=r"missing input\(s\) \['x'\]"):
        runner.run({})
    runner.close()
    assert driver.memory == {}

    cache.engine_path(key).write_bytes(b"doubling PLAN")       # same size, other bytes
    with pytest.raises(CheckpointError, match="sha256 differs"):
        backend.load(graph)
