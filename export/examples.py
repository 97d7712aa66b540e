"""Inputs for each graph: small ones to trace with, and real ones (from clips) to check parity on.

`trace_example(defn, model)`: every symbolic dimension sized 2 or 3 (never 1: a size-1 example silently pins a
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

from tpo import manifest as names
from tpo.model.generate import temporal_source
from tpo.model.graphs import GraphDef
from tpo.model.mask_tracker import track
from tpo.model.preprocess import Video, mask_pixels, middle_frame_indices, mllm_pixels
from tpo.model.prompt import build_prompt
from tpo.model.tpo_model import TPOModel

Inputs = dict[str, Tensor]
TRACE_SIZES = {"batch": 2, "num_vision_tokens": 98, "sequence": 3, "past_sequence": 5, "total_sequence": 8,
               "boxes": 2, "text_tokens": 5, "clips": 6, "objects": 2}


def trace_example(defn: GraphDef, model: TPOModel) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    out = []
    for t in defn.inputs:
        shape = [TRACE_SIZES[d] if isinstance(d, str) else d for d in t.shape]
        if t.name == "attention_mask":
            out.append(torch.ones(shape, dtype=torch.int64))
        elif t.name == "position_ids":
            out.append(torch.arange(TRACE_SIZES["past_sequence"], TRACE_SIZES["total_sequence"]).expand(shape).clone())
        elif t.name == "memory_time":
            out.append(torch.arange(shape[1]).expand(shape).clone())
        elif t.dtype == "bool" and t.shape == ():
            out.append(torch.tensor(True))
        elif t.dtype == "bool":
            x = torch.ones(shape, dtype=torch.bool)
            if len(shape) == 2 and shape[1] > 1:
                x[:, -1] = False        # exercise the invalid path, keep the first valid
            out.append(x)
        elif t.name == "boxes":
            out.append(torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]]))
        else:
            out.append(torch.randn(shape, generator=g))
    return tuple(out)


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
    frames = video.frames[middle_frame_indices(cfg.vision.num_frames, video.frames.shape[0])]
    pixels = mllm_pixels(frames, cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std)
    image_pixels = mllm_pixels(frames[len(frames) // 2:][:1], cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std)
    out[names.VISION_ENCODER] = [{"pixels": pixels}]
    out[names.VISION_ENCODER_IMAGE] = [{"pixels": image_pixels}]
    tokens = model.vision_layernorm(model.vision_encoder(pixels))
    image_tokens = model.vision_layernorm(model.vision_encoder(image_pixels))
    out[names.CONNECTOR] = [{"vision_tokens": tokens}, {"vision_tokens": image_tokens}]
    visual = model.connector(tokens)

    # language path: prefill with an empty past, then one decode step
    prompt = build_prompt(tokenizer, question, cfg.num_visual_tokens)
    embeds = model.embed_prompt(prompt, visual, placeholder_ids={})
    n = embeds.shape[1]
    layers, kv, hd = cfg.llm.num_layers, cfg.llm.num_kv_heads, cfg.llm.head_dim
    empty = {name: torch.zeros(1, kv, 0, hd) for name in names.past_names(layers)}
    prefill = {"inputs_embeds": embeds, "attention_mask": torch.ones(1, n, dtype=torch.int64),
               "position_ids": torch.arange(n)[None], **empty}
    logits, hidden, cache = model.llm_step(embeds)
    token = int(logits[0, -1].argmax())
    step = model.token_embeddings(torch.tensor([[token]]))
    past = {}
    for i in range(layers):
        past[names.PAST_KEY.format(i=i)] = cache.layers[i].keys
        past[names.PAST_VALUE.format(i=i)] = cache.layers[i].values
    decode = {"inputs_embeds": step, "attention_mask": torch.ones(1, n + 1, dtype=torch.int64),
              "position_ids": torch.tensor([[n]]), **past}
    out[names.LLM] = [prefill, decode]
    h = hidden[:, -1]                                                    # (1, H)
    out[names.TASK_ROUTER] = [{"hidden": h}]
    out[names.BOX_ENCODER] = [{"boxes": torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]])}]

    # temporal head on the model's own features
    feats = temporal_source(model, tokenizer)(video, question)
    out[names.TEMPORAL_HEAD] = [{"text_feats": feats.text, "text_mask": feats.text_mask, "video_feats": feats.video,
                                 "video_mask": feats.video_mask, "prompt_token": h[:, None]}]

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
    out[names.MASK_IMAGE_ENCODER] = [{"pixels": args[0]} for args, _, _ in encode_image]
    first = encode_image[0][2]
    out[names.MASK_DECODER_PROMPTED] = [{"image": first.image[:1], "high_res_s4": first.high_res_s4[:1],
                                         "high_res_s8": first.high_res_s8[:1], "sparse_prompt": decode[0][0][3]}]
    out[names.MASK_DECODER_TRACKED] = [
        {"conditioned": args[0], "high_res_s4": feats_.high_res_s4[:1], "high_res_s8": feats_.high_res_s8[:1]}
        for (args, _, _), (_, _, feats_) in zip(decode[1:], encode_image[1:])
    ]
    out[names.MEMORY_ENCODER] = [
        {"image": args[0][:1], "mask_logits": args[1], "is_conditioning": torch.tensor(kw["is_conditioning_frame"])}
        for args, kw, _ in recorders["encode_memory"].calls
    ]
    out[names.MEMORY_ATTENTION] = [
        {"image": a[0][:1], "image_pos": a[1][:1], "memory": a[2], "memory_pos": a[3], "memory_time": a[4],
         "memory_valid": a[5], "pointers": a[6], "pointer_valid": a[7]}
        for a, _, _ in recorders["attend_memory"].calls
    ]
    return out
