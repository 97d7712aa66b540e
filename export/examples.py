"""Inputs for each graph: small ones to trace with, and real ones (from clips) to check parity on.

`trace_example(defn)`: every symbolic dimension sized 2 or 3 (never 1: a size-1 example silently pins a
dimension to 1 in some SAM2 pieces), values in each tensor's domain (valid masks with some True, time rows in
range, a past length different from the new length).

`clip_inputs(model, tokenizer, video, question)`: the inputs each graph sees when the PyTorch pipeline answers
`question` about `video`: pixels of its frames, the visual tokens, the spliced prompt (prefill with an empty
past, then one decode step over a real past), the router's hidden state, the temporal head's features, and the
mask head's per-frame tensors captured from `mask_tracker.track` (so the memory slots, time rows and validity
are exactly the tracker's).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tpo.contract import graphs as G
from tpo.contract.graphs import TensorSpec
from tpo.model.generate import temporal_source
from tpo.model.graphs import GraphDef
from tpo.model.mask_tracker import track
from tpo.model.preprocess import Video, mask_pixels, middle_frame_indices, mllm_pixels
from tpo.model.prompt import build_prompt
from tpo.model.tpo_model import TPOModel

Inputs = dict[str, Tensor]
TRACE_SIZES = {"batch": 2, "num_vision_tokens": 98, "sequence": 3, "past_sequence": 5, "total_sequence": 8,
               "boxes": 2, "text_tokens": 5, "clips": 6, "objects": 2}
EXAMPLE_BOXES = ((0.1, 0.2, 0.5, 0.6), (0.3, 0.3, 0.9, 0.8))


def example_tensor(t: TensorSpec, sizes: dict[str, int], g: torch.Generator) -> Tensor:
    """A tensor of `t`'s shape (dynamic dimensions at `sizes`) with values in its declared domain."""
    shape = [sizes[d] if isinstance(d, str) else d for d in t.shape]
    if t.domain == "ones":
        return torch.ones(shape, dtype=torch.int64)
    if t.domain == "positions":
        return torch.arange(sizes["past_sequence"], sizes["total_sequence"]).expand(shape).clone()
    if t.domain == "slot_times":
        return torch.arange(shape[-1]).expand(shape).clone()
    if t.domain == "flag":
        return torch.tensor(True)
    if t.domain == "valid":
        x = torch.ones(shape, dtype=torch.bool)
        if len(shape) == 2 and shape[1] > 1:
            x[:, -1] = False        # exercise the invalid path, keep the first valid
        return x
    if t.domain == "box_corners":
        return torch.tensor(EXAMPLE_BOXES).repeat(-(-shape[0] // len(EXAMPLE_BOXES)), 1)[: shape[0]]
    return torch.randn(shape, generator=g)


def trace_example(defn: GraphDef) -> tuple[Tensor, ...]:
    """Inputs to trace `defn` with: every dynamic dimension at 2 or more, values in each tensor's domain."""
    g = torch.Generator().manual_seed(0)
    return tuple(example_tensor(t, TRACE_SIZES, g) for t in defn.inputs)


class _Recorder:
    """Wraps a bound method of the mask head and records its arguments per call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        result = self.fn(*args, **kwargs)
        self.calls.append((args, kwargs, result))
        return result


@torch.no_grad()
def clip_inputs(model: TPOModel, tokenizer, video: Video, question: str, track_frames: int = 4) -> dict[str, list[Inputs]]:
    """Real inputs for every graph from one clip and question (lists: some graphs run several times)."""
    cfg = model.cfg
    out: dict[str, list[Inputs]] = {}
    # visual path: the video graph and the image graph (on the middle frame)
    indices = middle_frame_indices(cfg.vision.num_frames, video.frames.shape[0])
    frames = video.frames[indices]
    pixels = mllm_pixels(frames, cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std)
    image_pixels = mllm_pixels(frames[len(frames) // 2:][:1], cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std)
    out[G.VISION_ENCODER.name] = [G.VISION_ENCODER.feed(pixels=pixels)]
    out[G.VISION_ENCODER_IMAGE.name] = [G.VISION_ENCODER_IMAGE.feed(pixels=image_pixels)]
    tokens = model.vision_layernorm(model.vision_encoder(pixels))
    image_tokens = model.vision_layernorm(model.vision_encoder(image_pixels))
    out[G.CONNECTOR.name] = [G.CONNECTOR.feed(vision_tokens=tokens), G.CONNECTOR.feed(vision_tokens=image_tokens)]
    visual = model.connector(tokens)

    # language path: prefill with an empty past, then one decode step
    prompt = build_prompt(tokenizer, question, cfg.num_visual_tokens, frame_indices=indices, fps=video.fps)
    embeds = model.embed_prompt(prompt, visual, placeholder_ids={})
    n = embeds.shape[1]
    layers, kv, hd = cfg.llm.num_layers, cfg.llm.num_kv_heads, cfg.llm.head_dim
    past_names = G.LLM.kv.past_names(layers)
    empty = {name: torch.zeros(1, kv, 0, hd) for name in past_names}
    prefill = G.LLM.feed(past=empty, inputs_embeds=embeds, attention_mask=torch.ones(1, n, dtype=torch.int64),
                         position_ids=torch.arange(n)[None])
    logits, hidden, cache = model.llm_step(embeds)
    token = int(logits[0, -1].argmax())
    step = model.token_embeddings(torch.tensor([[token]]))
    layer_tensors = [t for i in range(layers) for t in (cache.layers[i].keys, cache.layers[i].values)]
    past = dict(zip(past_names, layer_tensors, strict=True))
    decode = G.LLM.feed(past=past, inputs_embeds=step, attention_mask=torch.ones(1, n + 1, dtype=torch.int64),
                        position_ids=torch.tensor([[n]]))
    out[G.LLM.name] = [prefill, decode]
    h = hidden[:, -1]                                                    # (1, H)
    out[G.TASK_ROUTER.name] = [G.TASK_ROUTER.feed(hidden=h)]
    out[G.BOX_ENCODER.name] = [G.BOX_ENCODER.feed(boxes=torch.tensor(EXAMPLE_BOXES))]
    out[G.MASK_BOX_PROMPT.name] = [G.MASK_BOX_PROMPT.feed(prompt_box=torch.tensor(EXAMPLE_BOXES))]

    # temporal head on the model's own features
    feats = temporal_source(model, tokenizer)(video, question)
    out[G.TEMPORAL_HEAD.name] = [G.TEMPORAL_HEAD.feed(
        text_feats=feats.text, text_mask=feats.text_mask, video_feats=feats.video, video_mask=feats.video_mask,
        prompt_token=h[:, None])]

    # mask head: record the tracker's calls
    head = model.sam
    recorders = {m: _Recorder(getattr(head, m)) for m in ("encode_image", "decode", "encode_memory", "attend_memory")}
    for m, r in recorders.items():
        setattr(head, m, r)
    try:
        mpix = mask_pixels(video.frames[:track_frames], cfg.mask_head.image_size, cfg.pixel_mean, cfg.pixel_std)
        for _ in track(head, mpix, model.track_prompt(h)):
            pass
    finally:
        for m in recorders:
            delattr(head, m)
    encode_image, decode = recorders["encode_image"].calls, recorders["decode"].calls
    out[G.MASK_IMAGE_ENCODER.name] = [G.MASK_IMAGE_ENCODER.feed(pixels=args[0]) for args, _, _ in encode_image]
    first = encode_image[0][2]
    out[G.MASK_DECODER_PROMPTED.name] = [G.MASK_DECODER_PROMPTED.feed(
        image=first.image[:1], high_res_s4=first.high_res_s4[:1], high_res_s8=first.high_res_s8[:1],
        sparse_prompt=decode[0][0][3])]
    out[G.MASK_DECODER_TRACKED.name] = [
        G.MASK_DECODER_TRACKED.feed(conditioned=args[0], high_res_s4=f.high_res_s4[:1], high_res_s8=f.high_res_s8[:1])
        for (args, _, _), (_, _, f) in zip(decode[1:], encode_image[1:], strict=True)
    ]
    out[G.MEMORY_ENCODER.name] = [
        G.MEMORY_ENCODER.feed(image=args[0][:1], mask_logits=args[1],
                              is_conditioning=torch.tensor(kw["is_conditioning_frame"]))
        for args, kw, _ in recorders["encode_memory"].calls
    ]
    out[G.MEMORY_ATTENTION.name] = [
        G.MEMORY_ATTENTION.feed(image=a[0][:1], image_pos=a[1][:1], memory=a[2], memory_pos=a[3], memory_time=a[4],
                                memory_valid=a[5], pointers=a[6], pointer_valid=a[7])
        for a, _, _ in recorders["attend_memory"].calls
    ]
    return out
