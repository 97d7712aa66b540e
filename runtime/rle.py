"""COCO run-length encoding of binary masks, in numpy: what `track` events carry as `mask_rle`.

    rle = rle_encode(mask)          # {"size": [h, w], "counts": "<compressed string>"}
    mask = rle_decode(rle)          # bool [h, w]; also takes uncompressed {"counts": [int, ...]}

The format is pycocotools' (`pycocotools.mask.encode` / `decode`) so any COCO tool reads the runtime's
output, written here because the runtime must not depend on pycocotools (a compiled package with no
wheel on some edge platforms). Runs are over the mask in column-major order and start with a run of
zeros (0 if the first pixel is set). The compressed string stores each run, from the third on as the
difference to the run two before, in 5-bit groups, least significant first, each as chr(48 + group)
with 0x20 meaning "more groups follow" and 0x10 of the last group the sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tpo.errors import InputError


def mask_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a 2-D mask in column-major order, starting with zeros."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return [int(r) for r in runs]


def encode_counts(runs: list[int]) -> str:
    """pycocotools' rleToString."""
    out: list[str] = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5                       # Python's >> is arithmetic, as the C code's on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def decode_counts(counts: str) -> list[int]:
    """pycocotools' rleFrString; InputError on characters outside the alphabet."""
    runs: list[int] = []
    x = k = 0
    for p, ch in enumerate(counts):
        c = ord(ch) - 48
        if not 0 <= c < 64:
            raise InputError(f"RLE counts: character {ch!r} at {p} is not in the COCO alphabet")
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
        x = k = 0
    if k:
        raise InputError("RLE counts: string ends inside a number")
    return runs


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """{"size": [h, w], "counts": str} of a 2-D boolean (or 0/1) mask, as pycocotools writes it."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"RLE: mask shape {tuple(mask.shape)}, expected [H, W]")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encode_counts(mask_runs(mask))}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Bool [h, w] mask of a compressed (counts: str or bytes) or uncompressed (counts: list) RLE."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"RLE: expected {{'size': [h, w], 'counts': ...}}, got {str(rle)[:80]}") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    runs = decode_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(r < 0 for r in runs):
        raise InputError(f"RLE of size [{h}, {w}]: negative run length")
    if sum(runs) != h * w:
        raise InputError(f"RLE of size [{h}, {w}]: runs cover {sum(runs)} pixels, expected {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape((h, w), order="F")
