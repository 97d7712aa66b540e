"""The per-frame fast path: SAM2 propagation around the exported mask graphs, on host numpy state.

Reproduces `tpo.model.mask_tracker` (the PyTorch reference) slot for slot:
- frame 0: `mask_image_encoder` -> `mask_decoder_prompted` with the router's sparse prompt -> `memory_encoder`
  (binarised mask); its memory and pointer go to slot 0;
- frame t > 0: `mask_image_encoder` -> `memory_attention` over a fixed-size bank (slot 0 = the conditioning
  frame, slots 1.. a ring of recent frames; time row and validity per slot) -> `mask_decoder_tracked` ->
  `memory_encoder` (sigmoid mask) into the ring.
Shapes stay static (K memory slots, P pointers), so TensorRT needs no re-planning per frame; the state is a
few preallocated arrays updated in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tpo.contract import Tracker
from tpo.contract import graphs as G
from tpo.contract.graphs import Outputs
from tpo.errors import InputError


@dataclass
class TrackStep:
    frame_index: int
    mask_logits: np.ndarray    # [O, 1, s, s] float32 low-res logits
    iou: np.ndarray            # [O, 1]
    object_score: np.ndarray   # [O, 1] logit, > 0 = present


class MaskTracker:
    """Host state of one tracked clip for O objects; `step(pixels)` per frame, prompted on the first."""

    def __init__(self, run: Callable[..., Outputs], tracker_cfg: Tracker, sparse_prompt: np.ndarray):
        self.run = run   # (graph spec, **inputs) -> outputs: the session's timed call
        k, p = tracker_cfg.num_maskmem, tracker_cfg.max_object_pointers
        g, cm, c = tracker_cfg.feature_size, tracker_cfg.memory_dim, tracker_cfg.hidden_size
        if sparse_prompt.ndim != 3 or sparse_prompt.shape[2] != c:
            raise InputError(f"sparse_prompt must be [objects, N, {c}], got {list(sparse_prompt.shape)}")
        o = sparse_prompt.shape[0]
        self.k, self.p, self.objects = k, p, o
        self.sparse_prompt = sparse_prompt.astype(np.float32)
        self.memory = np.zeros((o, k, cm, g, g), np.float32)
        self.memory_pos = np.zeros((o, k, cm, g, g), np.float32)
        self.memory_frame = np.full(k, -1, np.int64)
        self.pointers = np.zeros((o, p, c), np.float32)
        self.pointer_frame = np.full(p, -1, np.int64)
        self.next_frame = 0

    def _store(self, t: int, memory: np.ndarray, memory_pos: np.ndarray, pointer: np.ndarray) -> None:
        mem_slot = 0 if t == 0 else 1 + (t - 1) % (self.k - 1)
        ptr_slot = 0 if t == 0 else 1 + (t - 1) % (self.p - 1)
        self.memory[:, mem_slot] = memory
        self.memory_pos[:, mem_slot] = memory_pos
        self.memory_frame[mem_slot] = t
        self.pointers[:, ptr_slot] = pointer
        self.pointer_frame[ptr_slot] = t

    def step(self, pixels: np.ndarray) -> TrackStep:
        """pixels [1, 3, S, S] float32 (runtime.preprocess.mask_frame) -> this frame's masks."""
        t = self.next_frame
        f = self.run(G.MASK_IMAGE_ENCODER, pixels=pixels)
        if t == 0:
            out = self.run(G.MASK_DECODER_PROMPTED, image=f.image, high_res_s4=f.high_res_s4,
                           high_res_s8=f.high_res_s8, sparse_prompt=self.sparse_prompt)
        else:
            out = self.run(G.MASK_DECODER_TRACKED, conditioned=self._attend(t, f), high_res_s4=f.high_res_s4,
                           high_res_s8=f.high_res_s8)
        mem = self.run(G.MEMORY_ENCODER, image=f.image, mask_logits=out.mask_logits, is_conditioning=np.array(t == 0))
        self._store(t, mem.memory, mem.memory_pos, out.object_pointer)
        self.next_frame = t + 1
        return TrackStep(t, out.mask_logits, out.iou, out.object_score)

    def _attend(self, t: int, f: Outputs) -> np.ndarray:
        """Frame t's image features conditioned on the memory bank: slot 0 the prompted frame, the ring the
        latest frames (time rows as SAM2 numbers them), pointers likewise; invalid slots masked."""
        frames = self.memory_frame
        memory_time = np.where(frames == 0, self.k - 1, t - frames - 1)
        memory_valid = (frames >= 0) & ((frames == 0) | (t - frames <= self.k - 1))
        pointer_valid = (self.pointer_frame >= 0) & (self.pointer_frame < t)
        o = self.objects
        return self.run(G.MEMORY_ATTENTION, image=f.image, image_pos=f.image_pos, memory=self.memory,
                        memory_pos=self.memory_pos, memory_time=np.broadcast_to(memory_time, (o, self.k)),
                        memory_valid=np.broadcast_to(memory_valid, (o, self.k)), pointers=self.pointers,
                        pointer_valid=np.broadcast_to(pointer_valid, (o, self.p))).conditioned
