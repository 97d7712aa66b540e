"""The bench's export cache: the tiny model's full `tpo-export` artifacts, and the standalone graph files of
the scaling sizes (`tpo.export.standalone`), made on first use and reused by later runs.

The folder is `$TPO_BENCH_CACHE`, else `$XDG_CACHE_HOME/tpo-edge/bench`, else `~/.cache/tpo-edge/bench`.
A tiny export is one folder per precision, keyed by the checkpoint's shard hashes; a folder counts only
if it is a complete export that passed its parity gate.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from tpo.contract import Manifest, Precision, sha256_file
from tpo.errors import TPOError


def cache_root() -> Path:
    if os.environ.get("TPO_BENCH_CACHE"):
        return Path(os.environ["TPO_BENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tpo-edge" / "bench"


def checkpoint_key(checkpoint: Path | None) -> str:
    from tpo.model.checkpoint import default_checkpoint, resolve_checkpoint

    files = resolve_checkpoint(checkpoint if checkpoint is not None else default_checkpoint())
    h = hashlib.sha256()
    for shard in files.shards:
        h.update(sha256_file(shard).encode())
    return h.hexdigest()[:12]


def load_usable(folder: Path) -> Manifest | None:
    """The manifest of a complete export that passed its gate, else None (hashes are checked later)."""
    try:
        return Manifest.load(folder)
    except TPOError:
        return None


def tiny_folder(precision: Precision, cache: Path | None = None, checkpoint: Path | None = None,
                config: str | None = None) -> Path:
    return (cache or cache_root()) / f"{config or 'tiny'}-{precision}-{checkpoint_key(checkpoint)}"


def ensure_artifacts(precision: Precision, cache: Path | None = None, checkpoint: Path | None = None,
                     config: str | None = None, log: Callable[[str], None] = print) -> Path:
    """The export of `checkpoint` (default: the embedded tiny) at `precision`, made once into the cache."""
    folder = tiny_folder(precision, cache, checkpoint, config)
    if load_usable(folder) is not None:
        return folder
    from tpo.export.exporter import export_artifacts
    from tpo.export.options import ExportOptions

    log(f"exporting {config or 'tiny'} at {precision} into {folder} (once; ~70 s per precision on 2 cores)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    export_artifacts(ExportOptions(out=folder, precision=precision, checkpoint=checkpoint, config=config,
                                   progress=False, force=True))
    return folder


def tiny_folders(plan, note: Callable[[str], None], log: Callable[[str], None]) -> dict[Precision, Path]:
    """The tiny artifacts per precision of `plan`: its `--artifacts` folders, else the cached exports (made
    when missing, except where the plan says not to); what is skipped is noted."""
    folders: dict[Precision, Path] = {}
    for a in plan.artifacts:
        manifest = load_usable(Path(a))
        if manifest is None:
            raise TPOError(f"--artifacts {a}: not a complete tpo-export output that passed its parity gate")
        folders.setdefault(manifest.precision, Path(a))
    for prec in plan.precisions:
        if prec in folders:
            continue
        if plan.artifacts:
            note(f"{prec}: no --artifacts folder at that precision; skipped")
            continue
        try:
            cached = tiny_folder(prec, plan.cache)
            if load_usable(cached) is not None:
                folders[prec] = cached
            elif plan.quick and prec != Precision.FP32:
                note(f"quick: no cached tiny {prec} export, so {prec} is skipped (a full run, or "
                     f"tpo-export --precision {prec} passed with --artifacts, adds it)")
            elif not plan.export_missing:
                note(f"no cached tiny {prec} export; skipped")
            else:
                t0 = time.perf_counter()
                folders[prec] = ensure_artifacts(prec, plan.cache, log=log)
                note(f"exported tiny at {prec} into the cache in {time.perf_counter() - t0:.0f} s "
                     f"(reused by later runs)")
        except TPOError as e:
            note(f"tiny {prec} export failed: {e}")
    if Precision.FP32 not in folders:
        raise TPOError("no fp32 artifacts of the tiny model (pass --artifacts DIR or let the bench export)")
    return folders
