"""Host-side SAM2 propagation around `MaskHead`'s pieces, reproducing the release's `propagate_in_video`.

The release's behaviour (third_party/sam2 as shipped with VideoChat-TPO, `add_new_box_embeding` then
`propagate_in_video`):
- frame 0 is prompted with the track adapter's sparse prompt [B, 3, C] on `image + no_memory_embedding`,
  single-mask with the stability fallback; its pointer comes from token 0;
- frame 0's memory comes from its binarised mask; tracked frames use sigmoid(logits) * 20 - 10;
- a tracked frame t attends to the conditioning frame (time row num_maskmem - 1) and the memories of frames
  t-1 .. t-(num_maskmem-1) other than frame 0 (time row t - f - 1), plus the pointers of frame 0 and of frames
  t-1 .. t-(max_object_pointers-1), with no time encoding; it decodes multimask with the empty prompt and keeps
  the best-IoU mask and pointer.
The state is a set of fixed-size buffers: slot 0 holds the conditioning frame, slots 1.. a ring of recent frames.
Not reproduced: the release's hole filling (`fill_hole_area=8`: background holes of <= 8 low-res pixels get logit
0.1, on every output mask and on frame 0's mask before its memory is encoded; it needs SAM2's CUDA
connected-components extension and is skipped with a warning when that is not built) and its bf16 rounding of
stored memories.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tpo.errors import InputError

from .mask_head import DecoderOutput, ImageFeatures, MaskHead


@dataclass
class TrackerState:
    """Memory of one clip for B objects (K = num_maskmem, P = max_object_pointers, h = w = S/16)."""

    memory: Tensor  # [B, K, Cm, h, w] head dtype; slot 0 = conditioning frame, 1..K-1 ring of recent frames
    memory_pos: Tensor  # [B, K, Cm, h, w] spatial sine encoding of each slot (time encoding added per step)
    memory_frame: Tensor  # [K] int64 frame index held by each slot, -1 = empty
    pointers: Tensor  # [B, P, C] head dtype; slot 0 = conditioning frame, 1..P-1 ring of recent frames
    pointer_frame: Tensor  # [P] int64 frame index held by each slot, -1 = empty
    next_frame: int = 0  # index of the next frame to process; 0 = not prompted yet

    @property
    def batch(self) -> int:
        return self.memory.shape[0]


@dataclass
class TrackedFrame:
    """One frame's result for B objects."""

    frame_index: int
    mask_logits: Tensor  # [B, 1, S/4, S/4] float low-res logits, > 0 = object (NO_OBJECT_SCORE when absent)
    iou: Tensor  # [B, 1] predicted IoU of the mask
    object_score: Tensor  # [B, 1] logit, > 0 = object present
    boxes: list[tuple[int, int, int, int] | None]  # per object, x1, y1, x2, y2 in frame pixels; None = empty


def init_tracker_state(
    head: MaskHead, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> TrackerState:
    """Empty state for `batch` objects, buffers on the head's device and dtype unless given."""
    cfg = head.config
    reference = head.no_object_pointer
    device = reference.device if device is None else torch.device(device)
    dtype = reference.dtype if dtype is None else dtype
    g = cfg.feature_size
    memory_shape = (batch, cfg.num_maskmem, cfg.memory_dim, g, g)
    return TrackerState(
        memory=torch.zeros(memory_shape, device=device, dtype=dtype),
        memory_pos=torch.zeros(memory_shape, device=device, dtype=dtype),
        memory_frame=torch.full((cfg.num_maskmem,), -1, dtype=torch.int64, device=device),
        pointers=torch.zeros(batch, cfg.max_object_pointers, cfg.hidden_size, device=device, dtype=dtype),
        pointer_frame=torch.full((cfg.max_object_pointers,), -1, dtype=torch.int64, device=device),
    )


def _encode_frame(head: MaskHead, pixels: Tensor, batch: int) -> ImageFeatures:
    """Encode one frame [1, 3, S, S] (or [3, S, S]) once and expand it to `batch` objects."""
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.shape[0] != 1:
        raise InputError(f"track one frame at a time: pixels must be [1, 3, S, S], got {list(pixels.shape)}")
    features = head.encode_image(pixels)
    return ImageFeatures(*(x.expand(batch, *x.shape[1:]) for x in features))


def _result(
    frame_index: int, out: DecoderOutput, frame_size: tuple[int, int] | None, image_size: int
) -> TrackedFrame:
    masks = upsample_mask_logits(out.mask_logits, frame_size or (image_size, image_size)) > 0
    return TrackedFrame(frame_index, out.mask_logits.float(), out.iou, out.object_score, boxes_from_masks(masks))


def _store(state: TrackerState, frame_index: int, memory, memory_pos, pointer) -> None:
    """Write a frame's memory and pointer: frame 0 into slot 0, later frames into the rings."""
    k, p = state.memory_frame.shape[0], state.pointer_frame.shape[0]
    mem_slot = 0 if frame_index == 0 else 1 + (frame_index - 1) % (k - 1)
    ptr_slot = 0 if frame_index == 0 else 1 + (frame_index - 1) % (p - 1)
    state.memory[:, mem_slot] = memory
    state.memory_pos[:, mem_slot] = memory_pos
    state.memory_frame[mem_slot] = frame_index
    state.pointers[:, ptr_slot] = pointer
    state.pointer_frame[ptr_slot] = frame_index


@torch.no_grad()
def track_first_frame(
    head: MaskHead,
    state: TrackerState,
    pixels: Tensor,
    sparse_prompt: Tensor,
    frame_size: tuple[int, int] | None = None,
) -> TrackedFrame:
    """Prompt frame 0. pixels: [1, 3, S, S] normalised; sparse_prompt: [B, N, C] (track adapter output).

    frame_size: (H, W) of the original frame for the boxes; default (S, S).
    """
    if state.next_frame != 0:
        raise InputError(f"this tracker state already holds {state.next_frame} frames; start a new one")
    if sparse_prompt.shape[0] != state.batch:
        raise InputError(f"sparse_prompt has {sparse_prompt.shape[0]} objects, the state {state.batch}")
    features = _encode_frame(head, pixels, state.batch)
    out = head.decode(
        head.add_no_memory(features.image),
        features.high_res_s4,
        features.high_res_s8,
        sparse_prompt.to(features.image.dtype),
        multimask=False,
    )
    memory = head.encode_memory(features.image, out.mask_logits, is_conditioning_frame=True)
    _store(state, 0, memory.memory, memory.memory_pos, out.object_pointer)
    state.next_frame = 1
    return _result(0, out, frame_size, head.config.image_size)


@torch.no_grad()
def track_next_frame(
    head: MaskHead, state: TrackerState, pixels: Tensor, frame_size: tuple[int, int] | None = None
) -> TrackedFrame:
    """Track the next frame. pixels: [1, 3, S, S] normalised; frame_size as in `track_first_frame`."""
    t = state.next_frame
    if t == 0:
        raise InputError("the tracker has no prompted frame yet; call track_first_frame first")
    batch, k = state.batch, head.config.num_maskmem
    features = _encode_frame(head, pixels, batch)
    # Time-encoding row per slot: num_maskmem - t_pos - 1 with t_pos = 0 for the conditioning frame and
    # t_pos = num_maskmem - (t - f) for a recent frame f, i.e. k - 1 and t - f - 1.
    frames = state.memory_frame
    memory_time = torch.where(frames == 0, k - 1, t - frames - 1)
    memory_valid = (frames >= 0) & ((frames == 0) | (t - frames <= k - 1))
    pointer_valid = (state.pointer_frame >= 0) & (state.pointer_frame < t)
    conditioned = head.attend_memory(
        features.image,
        features.image_pos,
        state.memory,
        state.memory_pos,
        memory_time.expand(batch, -1),
        memory_valid.expand(batch, -1),
        state.pointers,
        pointer_valid.expand(batch, -1),
    )
    out = head.decode(
        conditioned, features.high_res_s4, features.high_res_s8, head.empty_prompt(batch), multimask=True
    )
    memory = head.encode_memory(features.image, out.mask_logits, is_conditioning_frame=False)
    _store(state, t, memory.memory, memory.memory_pos, out.object_pointer)
    state.next_frame = t + 1
    return _result(t, out, frame_size, head.config.image_size)


def track(
    head: MaskHead, frames: Tensor, sparse_prompt: Tensor, frame_size: tuple[int, int] | None = None
) -> Iterator[TrackedFrame]:
    """Prompt frame 0 with `sparse_prompt` and propagate through the clip, yielding one result per frame.

    frames: [T, 3, S, S] float, resized to image_size and ImageNet-normalised.
    sparse_prompt: [B, N, C] one prompt per object (the release: B = 1, N = 3 from the track adapter).
    frame_size: (H, W) of the original frames, for the boxes; default (S, S).
    """
    s = head.config.image_size
    if frames.dim() != 4 or tuple(frames.shape[1:]) != (3, s, s) or frames.shape[0] == 0:
        raise InputError(f"frames must be [T>=1, 3, {s}, {s}], got {list(frames.shape)}")
    state = init_tracker_state(head, sparse_prompt.shape[0])
    yield track_first_frame(head, state, frames[0:1], sparse_prompt, frame_size)
    for t in range(1, frames.shape[0]):
        yield track_next_frame(head, state, frames[t : t + 1], frame_size)


@torch.no_grad()
def track_clip(
    head: MaskHead, frames: Tensor, sparse_prompt: Tensor, frame_size: tuple[int, int]
) -> tuple[list[np.ndarray], list[list[float] | None], list[float]]:
    """One object tracked over a clip at frame resolution: per frame its bool mask [H, W] (the low-res logits
    upsampled to frame_size, > 0), its box (x1, y1, x2, y2 px floats, None when the mask is empty) and its
    object score. frames and sparse_prompt [1, N, C] as in `track`."""
    masks, boxes, scores = [], [], []
    for frame in track(head, frames, sparse_prompt, frame_size):
        masks.append((upsample_mask_logits(frame.mask_logits, frame_size)[0, 0] > 0).cpu().numpy())
        boxes.append(None if frame.boxes[0] is None else [float(v) for v in frame.boxes[0]])
        scores.append(float(frame.object_score[0, 0]))
    return masks, boxes, scores


def upsample_mask_logits(mask_logits: Tensor, frame_size: tuple[int, int]) -> Tensor:
    """Low-res logits [B, 1, h, w] -> [B, 1, H, W] float32 at frame_size = (H, W), bilinear as the release."""
    return F.interpolate(mask_logits.float(), size=tuple(frame_size), mode="bilinear", align_corners=False)


def boxes_from_masks(masks: Tensor) -> list[tuple[int, int, int, int] | None]:
    """Boxes of boolean masks [B, 1, H, W] (or [B, H, W]): x1, y1, x2, y2 in pixels, None if no pixel is on.

    Pixel-edge coordinates: x1/y1 is the first on column/row, x2/y2 one past the last, so a single on pixel
    at (x, y) gives (x, y, x + 1, y + 1).
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    boxes: list[tuple[int, int, int, int] | None] = []
    for mask in masks:
        cols = torch.nonzero(mask.any(dim=0)).flatten()
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        if cols.numel() == 0:
            boxes.append(None)
        else:
            boxes.append((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    return boxes
