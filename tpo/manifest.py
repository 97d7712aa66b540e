"""The export manifest: the one source of graph and tensor names that export and runtime share.

`tpo-export` writes `manifest.json` beside the graphs; `tpo.runtime` reads it and nothing else to learn
what to run. This module is torch-free (the runtime imports it) and holds:
- the graph names and their tensor names (the contract between the two sides);
- the manifest's reader, with the hash check every artifact goes through before anything loads it.

Layout of `manifest.json` (format `tpo-edge-manifest/1`):

    format, created, precision ("fp32" | "fp16"), opset
    model: {config_name, config (TPOConfig as a dict), checkpoint: {path, sha256 of its index/shards}}
    tools: {torch, transformers, onnx, onnxruntime, onnxscript, tpo_edge}
    preprocess: {mllm: {...}, mask: {...}, temporal: {...}}        sizes, mean/std, sampling
    tokens: {bos, eos, video_placeholder, track_box, triggers: {id: task}, placeholders: {task: id}}
    llm: {num_layers, num_kv_heads, head_dim, hidden_size, vocab_size, past_key, past_value, present_key,
          present_value, max_prompt_tokens, num_visual_tokens}
    tracker: {num_maskmem, max_object_pointers, image_size, low_res_size, feature_size, ...}
    graphs: {name: {file, sha256, bytes, extra_files: {side file: sha256}, precision, fp32_islands, inputs, outputs}}
        each input/output: {name, dtype ("float32" | "float16" | "int64" | "bool"), shape: [int | "dim"]}
    files: {name: {file, sha256, bytes, tensors?: {...}}}             tokenizer, embedding tables
    parity: {graphs: {name: {output: {max_abs, max_rel, ...}}}, tasks: {...}, passed: bool}

Every file path is relative to the manifest's folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpo.errors import CheckpointError, InputError

FORMAT = "tpo-edge-manifest/1"
MANIFEST_FILE = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")   # int8 is reserved for the calibration issue
EXPORTABLE_PRECISIONS = ("fp32", "fp16")

# ------------------------------------------------------------------------------------------ graph names
VISION_ENCODER = "vision_encoder"               # num_frames frames (videos)
VISION_ENCODER_IMAGE = "vision_encoder_image"   # one frame (images, the temporal head's clips)
CONNECTOR = "connector"
LLM = "llm"
TASK_ROUTER = "task_router"
BOX_ENCODER = "box_encoder"
TEMPORAL_HEAD = "temporal_head"
MASK_IMAGE_ENCODER = "mask_image_encoder"
MASK_DECODER_PROMPTED = "mask_decoder_prompted"
MASK_DECODER_TRACKED = "mask_decoder_tracked"
MEMORY_ENCODER = "memory_encoder"
MEMORY_ATTENTION = "memory_attention"

GRAPHS = (
    VISION_ENCODER, VISION_ENCODER_IMAGE, CONNECTOR, LLM, TASK_ROUTER, BOX_ENCODER, TEMPORAL_HEAD,
    MASK_IMAGE_ENCODER, MASK_DECODER_PROMPTED, MASK_DECODER_TRACKED, MEMORY_ENCODER, MEMORY_ATTENTION,
)
SLOW_PATH = (VISION_ENCODER, VISION_ENCODER_IMAGE, CONNECTOR, LLM, TASK_ROUTER, BOX_ENCODER, TEMPORAL_HEAD)
FAST_PATH = (MASK_IMAGE_ENCODER, MASK_DECODER_PROMPTED, MASK_DECODER_TRACKED, MEMORY_ENCODER, MEMORY_ATTENTION)

# files saved beside the graphs
EMBEDDINGS = "embeddings"          # embeddings.safetensors: token table + task embeddings (host-side splice)
TOKENIZER = "tokenizer"            # tokenizer.model (SentencePiece) + task tokens
TOKEN_TABLE = "token_embedding"    # [V, H] tensor name inside embeddings.safetensors
TASK_EMBEDDING = "task_embedding.{task}"   # [H] per task: region, temporal, track
TASKS = ("region", "temporal", "track")
# the 7 task tokens, in the order the release adds them to the vocabulary (ids vocab_base .. vocab_base+6)
TASK_TOKENS = ("<box_begin>", "<time_begin>", "<temp>", "<boxes>", "<track_begin>", "<tracking>", "<track_box>")

# -------------------------------------------------------------------------------------- LLM tensor names
# optimum's KV-cache names, so its tools can read the LLM graph
PAST_KEY = "past_key_values.{i}.key"
PAST_VALUE = "past_key_values.{i}.value"
PRESENT_KEY = "present.{i}.key"
PRESENT_VALUE = "present.{i}.value"


def past_names(num_layers: int) -> list[str]:
    return [n.format(i=i) for i in range(num_layers) for n in (PAST_KEY, PAST_VALUE)]


def present_names(num_layers: int) -> list[str]:
    return [n.format(i=i) for i in range(num_layers) for n in (PRESENT_KEY, PRESENT_VALUE)]


# ------------------------------------------------------------------------------------------- hashing
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]   # ints are fixed, strings are named symbolic dimensions


@dataclass(frozen=True)
class GraphEntry:
    name: str
    path: Path
    sha256: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph {self.name}: no input named {name!r}")


def _specs(items: list[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in items)


class Manifest:
    """A read manifest. `Manifest.load(folder)` checks the format; `verify()` checks every file's sha256."""

    def __init__(self, root: Path, data: dict[str, Any]):
        self.root = root
        self.data = data

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
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
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
        if not data.get("parity", {}).get("passed", False):
            raise CheckpointError(f"{path}: the export did not pass its parity gate")
        return cls(root, data)

    # ---- views
    @property
    def precision(self) -> str:
        return self.data["precision"]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def graph(self, name: str) -> GraphEntry:
        g = self.data["graphs"].get(name)
        if g is None:
            raise CheckpointError(f"{self.root / MANIFEST_FILE}: no graph {name!r} (has {sorted(self.data['graphs'])})")
        return GraphEntry(name, self.root / g["file"], g["sha256"], g["precision"],
                          _specs(g["inputs"]), _specs(g["outputs"]))

    def file(self, name: str) -> Path:
        f = self.data["files"].get(name)
        if f is None:
            raise CheckpointError(f"{self.root / MANIFEST_FILE}: no file entry {name!r}")
        return self.root / f["file"]

    def entries(self) -> list[tuple[str, Path, str]]:
        """(label, path, sha256) of every artifact the manifest lists."""
        out = []
        for n, g in self.data["graphs"].items():
            out.append((f"graph {n}", self.root / g["file"], g["sha256"]))
            for extra, digest in g.get("extra_files", {}).items():   # external weights of large graphs
                out.append((f"graph {n}", self.root / extra, digest))
        for n, f in self.data["files"].items():
            out.append((f"file {n}", self.root / f["file"], f["sha256"]))
            for extra, digest in f.get("extra_files", {}).items():
                out.append((f"file {n}", self.root / extra, digest))
        return out

    def verify(self) -> None:
        """Refuse any listed artifact that is missing or whose sha256 differs from the manifest."""
        for label, path, digest in self.entries():
            if not path.is_file():
                raise CheckpointError(f"{path}: missing ({label} of {self.root / MANIFEST_FILE})")
            actual = sha256_file(path)
            if actual != digest:
                raise CheckpointError(
                    f"{path}: sha256 {actual[:12]}... does not match the manifest's {digest[:12]}... "
                    f"({label}); the artifact was changed or corrupted, re-export it"
                )
