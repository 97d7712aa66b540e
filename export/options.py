"""What `tpo-export` is asked to do, and every check on it that needs no model: torch-free on purpose.

`check_options` runs before torch, the checkpoint or the exporter are imported, so a wrong argument costs
the user about a second instead of the minute a model load takes; `export_artifacts` calls it again for
callers of the Python API. Only the standard library and `tpo.errors`/`tpo.contract` are imported here.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tpo.contract import Precision
from tpo.contract.manifest import EXPORTABLE
from tpo.errors import CheckpointError, ConfigError, InputError
from tpo.model.presets import check_config

TARGETS = ("onnx", "tensorrt")
MIN_OPSET, MAX_OPSET = 18, 23   # what torch 2.13's dynamo exporter and onnxruntime 1.32 both run
DEFAULT_OPSET = 20
STREAM_MODES = ("auto", "on", "off")
GATE_MODES = ("auto", "full", "depth")
EMBEDDED_CONFIG = "tiny"        # the configuration of the embedded checkpoint


@dataclass
class ExportOptions:
    out: Path
    precision: Precision | str = Precision.FP16     # a Precision once check_options ran
    checkpoint: Path | None = None      # None: the embedded tiny checkpoint
    config: str | None = None
    targets: tuple[str, ...] = ("onnx",)
    opset: int = DEFAULT_OPSET
    force: bool = False
    parity_clips: int = 2
    parity_frames: int = 8              # frames per parity clip (tracking runs on all of them)
    progress: bool = True
    graphs: tuple[str, ...] | None = None   # a subset (tests); None = all
    skip_task_parity: bool = False      # tests of the graph level only
    stream: str = "auto"                # "on" | "off" | "auto": streamed export (stream_export.py) for big models
    gate: str = "auto"                  # streamed export's numerics gate: "full" | "depth" | "auto" (by size)


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"--opset {opset}: supported opsets are {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    return opset


def check_out(out: Path, force: bool) -> None:
    """--out must be creatable: not an existing folder without --force, not a file, not under a file, and
    a folder must be creatable in its nearest existing folder (the export writes a temporary one there)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder (--force replaces folders only)")
        if not force:
            raise InputError(f"{out}: already exists; pass --force to replace it")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {out}: {parent} is a file, not a folder")
    try:        # a real folder, removed at once: access() says yes to root even where mkdir fails (/proc)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.check-", dir=parent))
    except OSError as e:
        raise InputError(f"--out {out}: cannot create folders in {parent} ({e.strerror})") from None


def check_options(opts: ExportOptions) -> None:
    """Every check that needs no model, in the order a user reads the arguments; one-line TPOErrors."""
    if opts.precision in ("int8", "int4", Precision.INT8, Precision.INT4):
        raise ConfigError(f"precision {opts.precision}: an fp32 export quantised by tpo.calibration (tpo-export "
                          f"--precision {Precision(opts.precision).value} --calibration-data SRC, or tpo-calibrate)")
    if opts.precision not in [p.value for p in EXPORTABLE]:
        raise ConfigError(f"--precision {opts.precision!r}: choose one of fp32, fp16, int8, int4, auto")
    opts.precision = Precision(opts.precision)
    unknown = [t for t in opts.targets if t not in TARGETS]
    if unknown or not opts.targets:
        raise ConfigError(f"--targets {','.join(opts.targets)}: choose from {', '.join(TARGETS)}")
    check_opset(opts.opset)
    if opts.stream not in STREAM_MODES:
        raise ConfigError(f"--stream {opts.stream!r}: choose one of {', '.join(STREAM_MODES)}")
    if opts.gate not in GATE_MODES:
        raise ConfigError(f"gate {opts.gate!r}: choose one of {', '.join(GATE_MODES)}")
    if not isinstance(opts.parity_clips, int) or opts.parity_clips < 1:
        raise ConfigError(f"--parity-clips {opts.parity_clips}: must be >= 1 (the gate needs a clip to compare on)")
    if not isinstance(opts.parity_frames, int) or opts.parity_frames < 1:
        raise ConfigError(f"parity_frames {opts.parity_frames}: must be >= 1")
    if opts.checkpoint is not None and not Path(opts.checkpoint).exists():
        raise CheckpointError(f"{opts.checkpoint}: no such checkpoint")
    if opts.config is not None:
        check_config(opts.config, "--config")
        if opts.checkpoint is None and opts.config != EMBEDDED_CONFIG:
            raise CheckpointError(f"--config {opts.config}: no embedded checkpoint for it; give --checkpoint DIR")
    check_out(Path(opts.out), opts.force)
