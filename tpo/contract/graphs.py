"""Every exported graph, declared once: its name, and each input and output tensor's name, dtype and shape.

This is the one place where a graph tensor's name is written. The model side wraps its modules in the order
declared here and resolves the shapes with its configuration (`GraphSpec.resolve`); the exporter writes the
resolved specs into the manifest; the runtime and the bench build feeds and read outputs through the specs:

    spec = graphs.MASK_IMAGE_ENCODER
    out = spec.outputs_of(runner.run(spec.feed(pixels=pixels)))     # feed() checks the input names
    out.image, out.high_res_s4                                       # attribute access, no strings

Shapes are templates: an int is fixed for every model, a name in `DYNAMIC_DIMS` is a dimension the graph takes
at any size within the manifest's profile, and any other name is a size the configuration fixes
(`model.graphs.graph_sizes`, e.g. "vision_size" = 224 for videochat-tpo).

    vision_encoder        pixels [batch, 3, num_frames, vision_size, vision_size] -> vision_tokens [batch, video_tokens, vision_width]
    vision_encoder_image  pixels [batch, 3, 1, vision_size, vision_size] -> vision_tokens [batch, image_tokens, vision_width]
    connector             vision_tokens [batch, num_vision_tokens, vision_width] -> visual_embeds [batch, num_queries, hidden_size]
    llm                   inputs_embeds [batch, sequence, hidden_size], attention_mask [batch, total_sequence] int64,
                          position_ids [batch, sequence] int64, past KV -> logits [batch, sequence, vocab],
                          hidden_states [batch, sequence, hidden_size] (after the final norm), present KV
    task_router           hidden [batch, hidden_size] -> region_box [batch, 4], track_prompt [batch, prompt_tokens,
                          mask_width], temporal_prompt [batch, 1, hidden_size]
    box_encoder           boxes [boxes, 4] -> box_embeds [boxes, hidden_size]
    temporal_head         text_feats [batch, text_tokens, text_dim], text_mask bool, video_feats [batch, clips,
                          video_dim], video_mask bool, prompt_token [batch, 1, text_dim] -> pred_logits
                          [batch, temporal_queries, 2], pred_spans [batch, temporal_queries, 2], saliency [batch, clips]
    mask_image_encoder    pixels [1, 3, mask_size, mask_size] -> high_res_s4, high_res_s8, image, image_pos
    mask_decoder_prompted image, high_res_s4, high_res_s8, sparse_prompt [objects, prompt_tokens, mask_width]
                          -> mask_logits [objects, 1, low_res, low_res], iou, object_score, object_pointer
    mask_decoder_tracked  conditioned [objects, mask_width, grid, grid], high_res_s4, high_res_s8 -> (the same four)
    memory_encoder        image, mask_logits, is_conditioning [] bool -> memory, memory_pos [objects, memory_width, grid, grid]
    memory_attention      image, image_pos, memory, memory_pos [objects, memory_slots, memory_width, grid, grid],
                          memory_time [objects, memory_slots] int64, memory_valid bool, pointers [objects,
                          pointer_slots, mask_width], pointer_valid bool -> conditioned
    mask_box_prompt       prompt_box [objects, 4] (0..1) -> box_prompt [objects, prompt_tokens, mask_width]: SAM2's prompt
                          encoder on a box, for a region answer handed to the tracker
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tpo.errors import CheckpointError, InputError

DTYPES = ("float32", "float16", "int64", "int32", "bool")
# dimensions a graph takes at any size (each has min/opt/max in the manifest's "dims")
DYNAMIC_DIMS = ("batch", "num_vision_tokens", "sequence", "past_sequence", "total_sequence", "boxes", "text_tokens",
                "clips", "objects")


DOMAINS = ("values", "ones", "positions", "slot_times", "valid", "flag", "box_corners")


@dataclass(frozen=True)
class TensorSpec:
    """name, dtype ("float32" for float tensors at every precision: graph I/O stays fp32), shape (ints fixed,
    names of `DYNAMIC_DIMS` dynamic, other names sizes of the configuration until resolved), and the domain of
    its values, for whoever makes example inputs (tracing, benchmarks): "values" (any float), "ones" (an
    attention mask), "positions" (past_sequence .. total_sequence), "slot_times" (a memory slot's time row,
    0 .. slots - 1), "valid" (validity flags, some False), "flag" (a scalar bool), "box_corners" (x1, y1, x2, y2 in 0..1).
    The domain is the contract's knowledge, not the manifest's: it is not written and not compared."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    domain: str = field(default="values", compare=False)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"tensor {self.name}: domain {self.domain!r} is not one of {DOMAINS}")

    def resolve(self, sizes: Mapping[str, int]) -> TensorSpec:
        def dim(d: int | str) -> int | str:
            if isinstance(d, int) or d in DYNAMIC_DIMS:
                return d
            if d not in sizes:
                raise KeyError(f"tensor {self.name}: no size {d!r} in the configuration's sizes")
            return int(sizes[d])
        return replace(self, shape=tuple(dim(d) for d in self.shape))

    @property
    def resolved(self) -> bool:
        return all(isinstance(d, int) or d in DYNAMIC_DIMS for d in self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> TensorSpec:
        try:
            spec = cls(str(d["name"]), str(d["dtype"]), tuple(d["shape"]))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{where}: a tensor entry lacks name, dtype or shape ({e})") from None
        if spec.dtype not in DTYPES:
            raise CheckpointError(f"{where}: tensor {spec.name} has dtype {spec.dtype!r} (known: {', '.join(DTYPES)})")
        return spec


def f32(name: str, *shape: int | str, domain: str = "values") -> TensorSpec:
    return TensorSpec(name, "float32", tuple(shape), domain)


def i64(name: str, *shape: int | str, domain: str) -> TensorSpec:
    return TensorSpec(name, "int64", tuple(shape), domain)


def flag(name: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name, "bool", tuple(shape), "valid" if shape else "flag")


class Outputs:
    """A graph's outputs by attribute (`out.mask_logits`); `dict(out)` gives them by name."""

    def __init__(self, graph: str, values: Mapping[str, Any], names: tuple[str, ...]):
        missing = [n for n in names if n not in values]
        if missing:
            raise CheckpointError(f"graph {graph}: outputs {missing} missing from the engine's results")
        self.__dict__.update({n: values[n] for n in names})
        self._names = names

    def __iter__(self):
        return iter(self._names)

    def __getitem__(self, name: str) -> Any:
        return self.__dict__[name]

    def keys(self) -> tuple[str, ...]:
        return self._names


@dataclass(frozen=True)
class KVCache:
    """The LLM's per-layer cache tensors: optimum's names (so its tools read the graph), one key and one value
    per layer, inputs `past_*` [batch, kv_heads, past_sequence, head_dim] and outputs `present_*`
    [batch, kv_heads, total_sequence, head_dim]."""

    past_key: str = "past_key_values.{i}.key"
    past_value: str = "past_key_values.{i}.value"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"

    def past_names(self, num_layers: int) -> list[str]:
        return [n.format(i=i) for i in range(num_layers) for n in (self.past_key, self.past_value)]

    def present_names(self, num_layers: int) -> list[str]:
        return [n.format(i=i) for i in range(num_layers) for n in (self.present_key, self.present_value)]

    def past_specs(self, num_layers: int) -> list[TensorSpec]:
        return [f32(n, "batch", "kv_heads", "past_sequence", "head_dim") for n in self.past_names(num_layers)]

    def present_specs(self, num_layers: int) -> list[TensorSpec]:
        return [f32(n, "batch", "kv_heads", "total_sequence", "head_dim") for n in self.present_names(num_layers)]


@dataclass(frozen=True)
class GraphSpec:
    """One graph: name, inputs and outputs in the order the module takes and returns them (shape templates).
    `kv` (the LLM only): the per-layer cache follows the declared inputs and outputs."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    kv: KVCache | None = None
    doc: str = field(default="", compare=False)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"graph {self.name}: no input named {name!r}")

    def tensors(self, sizes: Mapping[str, int], num_layers: int = 0) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Every input and output with the configuration's sizes filled in, the cache expanded to `num_layers`
        layers (what the manifest stores and the exporter names in the file)."""
        inputs, outputs = list(self.inputs), list(self.outputs)
        if self.kv is not None:
            if num_layers < 1:
                raise ValueError(f"graph {self.name}: the KV cache needs num_layers >= 1")
            inputs += self.kv.past_specs(num_layers)
            outputs += self.kv.present_specs(num_layers)
        return [t.resolve(sizes) for t in inputs], [t.resolve(sizes) for t in outputs]

    def feed(self, past: Mapping[str, Any] | None = None, **arrays: Any) -> dict[str, Any]:
        """{name: array} for exactly the declared inputs (keywords); the LLM's cache as `past` ({name: array})."""
        declared = set(self.input_names)
        unknown, missing = sorted(set(arrays) - declared), sorted(declared - set(arrays))
        if unknown or missing:
            raise InputError(f"graph {self.name}: inputs {unknown} are not declared; {missing} are missing")
        out = dict(arrays)
        if self.kv is not None:
            layers = len(past or {}) // 2
            if past is None or sorted(past) != sorted(self.kv.past_names(layers)) or layers < 1:
                raise InputError(f"graph {self.name}: the past cache must hold one key and one value per layer "
                                 f"named {self.kv.past_key!r} / {self.kv.past_value!r}")
            out.update(past)
        elif past:
            raise InputError(f"graph {self.name}: has no cache inputs")
        return out

    def outputs_of(self, values: Mapping[str, Any]) -> Outputs:
        """The declared outputs by attribute; the LLM's cache is `.present` ({past name: present value}), ready to
        feed back as the next step's `past`."""
        out = Outputs(self.name, values, self.output_names)
        if self.kv is not None:
            layers = (len(values) - len(self.output_names)) // 2
            presents = self.kv.present_names(layers)
            missing = [n for n in presents if n not in values]
            if missing or layers < 1:
                raise CheckpointError(f"graph {self.name}: present cache outputs missing ({missing[:2]})")
            out.present = {p: values[q] for p, q in zip(self.kv.past_names(layers), presents, strict=True)}
        return out


# ------------------------------------------------------------------------------------------ the graphs
def _decoder_outputs() -> tuple[TensorSpec, ...]:
    return (f32("mask_logits", "objects", 1, "low_res", "low_res"), f32("iou", "objects", 1),
            f32("object_score", "objects", 1), f32("object_pointer", "objects", "mask_width"))


_S4 = f32("high_res_s4", 1, "s4_channels", "low_res", "low_res")
_S8 = f32("high_res_s8", 1, "s8_channels", "mid_res", "mid_res")
_IMAGE = f32("image", 1, "mask_width", "grid", "grid")
_IMAGE_POS = f32("image_pos", 1, "mask_width", "grid", "grid")

VISION_ENCODER = GraphSpec(
    "vision_encoder",
    (f32("pixels", "batch", 3, "num_frames", "vision_size", "vision_size"),),
    (f32("vision_tokens", "batch", "video_tokens", "vision_width"),),
    doc="num_frames frames (videos) -> normalised vision tokens")
VISION_ENCODER_IMAGE = GraphSpec(
    "vision_encoder_image",
    (f32("pixels", "batch", 3, 1, "vision_size", "vision_size"),),
    (f32("vision_tokens", "batch", "image_tokens", "vision_width"),),
    doc="one frame (images, the temporal head's clips) -> normalised vision tokens")
CONNECTOR = GraphSpec(
    "connector",
    (f32("vision_tokens", "batch", "num_vision_tokens", "vision_width"),),
    (f32("visual_embeds", "batch", "num_queries", "hidden_size"),))
LLM = GraphSpec(
    "llm",
    (f32("inputs_embeds", "batch", "sequence", "hidden_size"), i64("attention_mask", "batch", "total_sequence", domain="ones"),
     i64("position_ids", "batch", "sequence", domain="positions")),
    (f32("logits", "batch", "sequence", "vocab"), f32("hidden_states", "batch", "sequence", "hidden_size")),
    kv=KVCache(), doc="the LoRA-merged decoder over inputs_embeds with explicit per-layer KV tensors")
# the router's outputs, one per head: each task names its own (tpo.contract.tasks)
REGION_BOX = f32("region_box", "batch", 4)
TRACK_PROMPT = f32("track_prompt", "batch", "prompt_tokens", "mask_width")
TEMPORAL_PROMPT = f32("temporal_prompt", "batch", 1, "hidden_size")
TASK_ROUTER = GraphSpec(
    "task_router",
    (f32("hidden", "batch", "hidden_size"),),
    (REGION_BOX, TRACK_PROMPT, TEMPORAL_PROMPT),
    doc="the final-norm hidden state at a task token -> every head's prompt")
BOX_ENCODER = GraphSpec(
    "box_encoder", (f32("boxes", "boxes", 4, domain="box_corners"),), (f32("box_embeds", "boxes", "hidden_size"),))
TEMPORAL_HEAD = GraphSpec(
    "temporal_head",
    (f32("text_feats", "batch", "text_tokens", "text_dim"), flag("text_mask", "batch", "text_tokens"),
     f32("video_feats", "batch", "clips", "video_dim"), flag("video_mask", "batch", "clips"),
     f32("prompt_token", "batch", 1, "text_dim")),
    (f32("pred_logits", "batch", "temporal_queries", 2), f32("pred_spans", "batch", "temporal_queries", 2),
     f32("saliency", "batch", "clips")))
MASK_IMAGE_ENCODER = GraphSpec(
    "mask_image_encoder",
    (f32("pixels", 1, 3, "mask_size", "mask_size"),),
    (_S4, _S8, _IMAGE, _IMAGE_POS),
    doc="levels 0 and 1 of the FPN after the decoder's conv_s0 / conv_s1, the image features and their positions")
MASK_DECODER_PROMPTED = GraphSpec(
    "mask_decoder_prompted",
    (_IMAGE, _S4, _S8, f32("sparse_prompt", "objects", "prompt_tokens", "mask_width")),
    _decoder_outputs(),
    doc="frame 0: the image without memory, prompted by the track adapter's output")
MASK_DECODER_TRACKED = GraphSpec(
    "mask_decoder_tracked",
    (f32("conditioned", "objects", "mask_width", "grid", "grid"), _S4, _S8),
    _decoder_outputs(),
    doc="tracked frames: the memory-conditioned image, the empty prompt, best of the multimasks")
MASK_BOX_PROMPT = GraphSpec(
    "mask_box_prompt",
    (f32("prompt_box", "objects", 4, domain="box_corners"),),
    (f32("box_prompt", "objects", "prompt_tokens", "mask_width"),),
    doc="SAM2's own prompt encoder on a box (x1, y1, x2, y2 in 0..1 of the frame): the two corners as points "
        "labelled 2 and 3 and a padding point -> a sparse prompt for mask_decoder_prompted (a region answer "
        "handed to the tracker)")
MEMORY_ENCODER = GraphSpec(
    "memory_encoder",
    (_IMAGE, f32("mask_logits", "objects", 1, "low_res", "low_res"), flag("is_conditioning")),
    (f32("memory", "objects", "memory_width", "grid", "grid"), f32("memory_pos", "objects", "memory_width", "grid", "grid")),
    doc="a frame and its mask -> a memory; the conditioning frame's mask binarised, others as sigmoids")
MEMORY_ATTENTION = GraphSpec(
    "memory_attention",
    (_IMAGE, _IMAGE_POS,
     f32("memory", "objects", "memory_slots", "memory_width", "grid", "grid"),
     f32("memory_pos", "objects", "memory_slots", "memory_width", "grid", "grid"),
     i64("memory_time", "objects", "memory_slots", domain="slot_times"), flag("memory_valid", "objects", "memory_slots"),
     f32("pointers", "objects", "pointer_slots", "mask_width"), flag("pointer_valid", "objects", "pointer_slots")),
    (f32("conditioned", "objects", "mask_width", "grid", "grid"),),
    doc="the image attended over a fixed-size memory bank (validity masks) and object pointers")

GRAPHS: tuple[GraphSpec, ...] = (
    VISION_ENCODER, VISION_ENCODER_IMAGE, CONNECTOR, LLM, TASK_ROUTER, BOX_ENCODER, TEMPORAL_HEAD,
    MASK_IMAGE_ENCODER, MASK_DECODER_PROMPTED, MASK_DECODER_TRACKED, MEMORY_ENCODER, MEMORY_ATTENTION,
    MASK_BOX_PROMPT,
)
BY_NAME: dict[str, GraphSpec] = {g.name: g for g in GRAPHS}
SLOW_PATH = (VISION_ENCODER, VISION_ENCODER_IMAGE, CONNECTOR, LLM, TASK_ROUTER, BOX_ENCODER, TEMPORAL_HEAD)
FAST_PATH = (MASK_IMAGE_ENCODER, MASK_DECODER_PROMPTED, MASK_DECODER_TRACKED, MEMORY_ENCODER, MEMORY_ATTENTION)
# the vision graph for a frame count: the video graph's frame count is the configuration's
VISION_GRAPH_FOR_IMAGES = VISION_ENCODER_IMAGE

SIZES = ("num_frames", "vision_size", "video_tokens", "image_tokens", "vision_width", "num_queries", "hidden_size",
         "vocab", "kv_heads", "head_dim", "prompt_tokens", "mask_width", "mask_size", "grid", "low_res", "mid_res",
         "s4_channels", "s8_channels", "memory_width", "memory_slots", "pointer_slots", "text_dim", "video_dim",
         "temporal_queries")


def graph(name: str) -> GraphSpec:
    spec = BY_NAME.get(name)
    if spec is None:
        raise KeyError(f"no graph named {name!r} (known: {', '.join(BY_NAME)})")
    return spec


def names(specs: Iterable[GraphSpec]) -> tuple[str, ...]:
    return tuple(s.name for s in specs)
