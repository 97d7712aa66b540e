"""The export manifest as typed dataclasses: what `tpo-export` writes beside the graphs and all the runtime and
the bench read to learn what to run. Torch-free and onnx-free (the runtime imports it).

    manifest = Manifest.load("artifacts/tiny-fp16")   # parses and checks the format and the paths
    manifest.verify()                                 # every file's sha256
    manifest.preprocess.mllm.image_size, manifest.llm.past_names(), manifest.graph("llm").inputs
    manifest.path_of(manifest.graph("llm"))           # a path inside the artifacts folder, never outside

Layout of `manifest.json` (format `tpo-edge-manifest/1`, unchanged by the typed reader):

    format, created, precision, opset, model {config_name, config, checkpoint}, tools {package: version}
    preprocess {mllm, mask, temporal}   tokens {bos, eos, video_placeholder, track_box, triggers, placeholders, vocab_size}
    llm {num_layers, num_kv_heads, head_dim, hidden_size, vocab_size, past_key, past_value, present_key,
         present_value, max_prompt_tokens, num_visual_tokens}
    vision {graphs_by_frames}   tracker {...}   dims {name: {min, opt, max}}
    graphs {name: {file, sha256, bytes, extra_files, precision, fp32_islands, inputs, outputs}}
    files {name: {file, sha256, bytes, extra_files?, tensors?}}   parity {... the gate's report ..., passed}

Every path is relative to the manifest's folder and must stay inside it: no absolute paths, no `..`, no
symlink leaving the folder; a manifest that points elsewhere is refused before anything is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from tpo.errors import CheckpointError, InputError

from .graphs import BY_NAME, KVCache, TensorSpec

FORMAT = "tpo-edge-manifest/1"
MANIFEST_FILE = "manifest.json"
EMBEDDINGS = "embeddings"            # file entry: embeddings.safetensors (token table + task embeddings)
TOKENIZER = "tokenizer"              # file entry: tokenizer/tokenizer.json (+ its side files)
TOKEN_TABLE = "token_embedding"      # [V, H] tensor inside embeddings.safetensors
TASK_EMBEDDING = "task_embedding.{task}"   # [H] per task


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"        # tpo-calibrate: QDQ int8 (vision and mask graphs), weight-only int8 (the LLM)
    INT4 = "int4"        # tpo-calibrate: weight-only int4 LLM (MatMulNBits), the rest as int8
    MIXED = "mixed"      # tpo-calibrate --precision auto: each graph its own (graphs[name].precision)

    @classmethod
    def parse(cls, value: str, where: str = "precision", error: type[Exception] = InputError) -> Precision:
        try:
            return cls(value)
        except ValueError:
            raise error(f"{where} {value!r}: choose one of {', '.join(p.value for p in cls)}") from None

    def __str__(self) -> str:
        return self.value


EXPORTABLE = (Precision.FP32, Precision.FP16)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _build(cls, data: Any, where: str):
    """A dataclass from a JSON object: unknown keys refused, missing ones named."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {unknown}")
    try:
        return cls(**data)
    except TypeError as e:
        raise CheckpointError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class MllmPreprocess:
    image_size: int
    num_frames: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sampling: str = "segment-middle"
    resize: str = "bicubic antialiased on uint8, rounded, then /255"


@dataclass(frozen=True)
class MaskPreprocess:
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "/255, then bicubic antialiased in float"


@dataclass(frozen=True)
class TemporalPreprocess:
    features: str            # "internal" (from the vision encoder) | "external" (encoders not in the artifacts)
    clip_s: float
    frames_per_clip: int
    max_text_tokens: int


@dataclass(frozen=True)
class Preprocess:
    mllm: MllmPreprocess
    mask: MaskPreprocess
    temporal: TemporalPreprocess

    @classmethod
    def from_json(cls, d: dict, where: str) -> Preprocess:
        def pre(kind, key):
            section = dict(d.get(key) or {})
            for k in ("mean", "std"):
                if k in section:
                    section[k] = tuple(float(v) for v in section[k])
            return _build(kind, section, f"{where}.{key}")
        return cls(pre(MllmPreprocess, "mllm"), pre(MaskPreprocess, "mask"), pre(TemporalPreprocess, "temporal"))


@dataclass(frozen=True)
class Tokens:
    bos: int
    eos: int
    video_placeholder: int
    track_box: int
    triggers: dict[int, str]          # token id -> task name
    placeholders: dict[str, int]      # task name -> token id
    vocab_size: int

    @classmethod
    def from_json(cls, d: dict, where: str) -> Tokens:
        d = dict(d)
        d["triggers"] = {int(k): str(v) for k, v in (d.get("triggers") or {}).items()}
        return _build(cls, d, where)

    def to_json(self) -> dict:
        return {**asdict(self), "triggers": {str(k): v for k, v in self.triggers.items()}}


@dataclass(frozen=True)
class LLM:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_prompt_tokens: int
    num_visual_tokens: int
    past_key: str = KVCache.past_key
    past_value: str = KVCache.past_value
    present_key: str = KVCache.present_key
    present_value: str = KVCache.present_value

    @property
    def kv(self) -> KVCache:
        return KVCache(self.past_key, self.past_value, self.present_key, self.present_value)

    def past_names(self) -> list[str]:
        return self.kv.past_names(self.num_layers)

    def present_names(self) -> list[str]:
        return self.kv.present_names(self.num_layers)


@dataclass(frozen=True)
class Tracker:
    num_maskmem: int
    max_object_pointers: int
    image_size: int
    low_res_size: int
    feature_size: int
    hidden_size: int
    memory_dim: int
    track_prompt_tokens: int
    no_object_score: float


@dataclass(frozen=True)
class Dim:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class GraphEntry:
    name: str
    file: str
    sha256: str
    bytes: int
    precision: Precision
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra_files: dict[str, str] = field(default_factory=dict)   # side file (external weights) -> sha256
    fp32_islands: tuple[str, ...] = ()                           # op types kept fp32 in an fp16 graph
    root: Path | None = field(default=None, compare=False, repr=False)   # the artifacts folder (not written)

    @property
    def path(self) -> Path:
        """The graph file (the manifest checked on loading that it stays inside the artifacts folder)."""
        if self.root is None:
            raise CheckpointError(f"graph {self.name}: entry not bound to an artifacts folder")
        return self.root / self.file

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph {self.name}: no input named {name!r}")

    @classmethod
    def from_json(cls, name: str, d: dict, where: str, root: Path | None = None) -> GraphEntry:
        d = dict(d, root=root)
        try:
            inputs = tuple(TensorSpec.from_json(t, f"{where}.inputs") for t in d.pop("inputs"))
            outputs = tuple(TensorSpec.from_json(t, f"{where}.outputs") for t in d.pop("outputs"))
        except KeyError as e:
            raise CheckpointError(f"{where}: missing {e}") from None
        d["precision"] = Precision.parse(d.get("precision", ""), f"{where}.precision", CheckpointError)
        d["fp32_islands"] = tuple(d.get("fp32_islands", ()))
        return _build(cls, {"name": name, "inputs": inputs, "outputs": outputs, **d}, where)

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "extra_files": dict(self.extra_files),
                "precision": self.precision.value, "fp32_islands": list(self.fp32_islands),
                "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}


@dataclass(frozen=True)
class FileEntry:
    name: str
    file: str
    sha256: str
    bytes: int | None = None
    extra_files: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, dict] = field(default_factory=dict)      # safetensors: name -> {dtype, shape}

    def to_json(self) -> dict:
        out: dict[str, Any] = {"file": self.file, "sha256": self.sha256}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        if self.extra_files:
            out["extra_files"] = dict(self.extra_files)
        if self.tensors:
            out["tensors"] = dict(self.tensors)
        return out


# ------------------------------------------------------------------------------------------ the manifest
@dataclass
class Manifest:
    """A read (or being written) manifest; `root` is the artifacts folder."""

    precision: Precision
    opset: int
    model: dict                 # {config_name, config (the model configuration as a dict), checkpoint}
    tools: dict[str, str]
    preprocess: Preprocess
    tokens: Tokens
    llm: LLM
    vision_graphs: dict[int, str]       # frame count -> graph name
    tracker: Tracker
    dims: dict[str, Dim]
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]
    parity: dict = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    root: Path = field(default=Path("."), compare=False)

    # ---- reading
    @classmethod
    def load(cls, folder: str | Path, *, require_parity: bool = True) -> Manifest:
        root = Path(folder)
        path = root / MANIFEST_FILE
        if not root.is_dir():
            raise InputError(f"{root}: no such artifacts folder (make one with tpo-export)")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; {root} is not a complete tpo-export output")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not readable JSON ({e})") from None
        manifest = cls.from_json(data, root, where=str(path))
        if require_parity and not manifest.parity.get("passed", False):
            raise CheckpointError(f"{path}: the export did not pass its parity gate")
        for label, rel, _ in manifest.entries():
            manifest.resolve(rel, label)         # every path inside the folder, before anything opens one
        return manifest

    @classmethod
    def from_json(cls, data: dict, root: str | Path = ".", where: str = MANIFEST_FILE) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{where}: format {got!r}, expected {FORMAT!r}")
        try:
            return cls(
                format=data["format"], created=data.get("created", ""),
                precision=Precision.parse(data["precision"], f"{where}: precision", CheckpointError),
                opset=int(data["opset"]),
                model=dict(data["model"]), tools=dict(data.get("tools", {})),
                preprocess=Preprocess.from_json(data["preprocess"], f"{where}: preprocess"),
                tokens=Tokens.from_json(data["tokens"], f"{where}: tokens"),
                llm=_build(LLM, data["llm"], f"{where}: llm"),
                vision_graphs={int(k): str(v) for k, v in data["vision"]["graphs_by_frames"].items()},
                tracker=_build(Tracker, data["tracker"], f"{where}: tracker"),
                dims={k: _build(Dim, v, f"{where}: dims.{k}") for k, v in data["dims"].items()},
                graphs={k: GraphEntry.from_json(k, v, f"{where}: graphs.{k}", Path(root))
                        for k, v in data["graphs"].items()},
                files={k: _build(FileEntry, {"name": k, **v}, f"{where}: files.{k}")
                       for k, v in data["files"].items()},
                parity=dict(data.get("parity", {})), root=Path(root))
        except KeyError as e:
            raise CheckpointError(f"{where}: missing section or field {e}") from None

    def to_json(self) -> dict:
        return {
            "format": self.format, "created": self.created, "precision": self.precision.value, "opset": self.opset,
            "model": self.model, "tools": self.tools,
            "preprocess": {k: asdict(getattr(self.preprocess, k)) for k in ("mllm", "mask", "temporal")},
            "tokens": self.tokens.to_json(), "llm": asdict(self.llm),
            "vision": {"graphs_by_frames": {str(k): v for k, v in self.vision_graphs.items()}},
            "tracker": asdict(self.tracker), "dims": {k: asdict(v) for k, v in self.dims.items()},
            "graphs": {k: g.to_json() for k, g in self.graphs.items()},
            "files": {k: f.to_json() for k, f in self.files.items()}, "parity": self.parity,
        }

    def rebase(self, root: str | Path) -> Manifest:
        """Point the manifest and its graph entries at `root` (an export renamed into place)."""
        self.root = Path(root)
        self.graphs = {k: replace(g, root=self.root) for k, g in self.graphs.items()}
        return self

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    # ---- views
    def graph(self, name: str) -> GraphEntry:
        g = self.graphs.get(name)
        if g is None:
            raise CheckpointError(f"{self.root / MANIFEST_FILE}: no graph {name!r} (has {sorted(self.graphs)})")
        return g

    def file(self, name: str) -> Path:
        f = self.files.get(name)
        if f is None:
            raise CheckpointError(f"{self.root / MANIFEST_FILE}: no file entry {name!r}")
        return self.resolve(f.file, f"file {name}")

    def path_of(self, graph: GraphEntry) -> Path:
        return self.resolve(graph.file, f"graph {graph.name}")

    def resolve(self, rel: str, label: str) -> Path:
        """`rel` under the artifacts folder, or CheckpointError: absolute paths, `..` and symlinks that leave
        the folder are refused (checked on the path before anything opens it)."""
        where = f"{self.root / MANIFEST_FILE}: {label}"
        if not isinstance(rel, str) or not rel or os.path.isabs(rel) or Path(rel).is_absolute():
            raise CheckpointError(f"{where}: path {rel!r} must be relative to the artifacts folder")
        if ".." in Path(rel).parts:
            raise CheckpointError(f"{where}: path {rel!r} leaves the artifacts folder")
        root = self.root.resolve()
        full = (self.root / rel).resolve()
        if full != root and root not in full.parents:
            raise CheckpointError(f"{where}: path {rel!r} resolves to {full}, outside {root}")
        return self.root / rel

    def entries(self) -> list[tuple[str, str, str]]:
        """(label, relative path, sha256) of every artifact the manifest lists."""
        out = []
        for n, g in self.graphs.items():
            out.append((f"graph {n}", g.file, g.sha256))
            out += [(f"graph {n}", extra, digest) for extra, digest in g.extra_files.items()]
        for n, f in self.files.items():
            out.append((f"file {n}", f.file, f.sha256))
            out += [(f"file {n}", extra, digest) for extra, digest in f.extra_files.items()]
        return out

    def verify(self) -> None:
        """Refuse any listed artifact that is missing, outside the folder, or whose sha256 differs."""
        for label, rel, digest in self.entries():
            path = self.resolve(rel, label)
            if not path.is_file():
                raise CheckpointError(f"{path}: missing ({label} of {self.root / MANIFEST_FILE})")
            actual = sha256_file(path)
            if actual != digest:
                raise CheckpointError(
                    f"{path}: sha256 {actual[:12]}... does not match the manifest's {digest[:12]}... "
                    f"({label}); the artifact was changed or corrupted, re-export it")

    def check_graph_names(self) -> None:
        """Every graph in the manifest is one the contract declares, with the declared input and output names."""
        for name, entry in self.graphs.items():
            spec = BY_NAME.get(name)
            if spec is None:
                raise CheckpointError(f"{self.root / MANIFEST_FILE}: graph {name!r} is not in this version's contract")
            names = [t.name for t in entry.inputs[: len(spec.inputs)]]
            if names != list(spec.input_names):
                raise CheckpointError(f"{self.root / MANIFEST_FILE}: graph {name} inputs {names}, the contract "
                                      f"declares {list(spec.input_names)}")
