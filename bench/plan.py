"""What a bench run does (`Plan`: the CLI's choices and the timing budgets) and the names every part shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpo.contract import Precision
from tpo.contract import graphs as G

BASELINE = "torch-fp32"          # the variant every ratio is taken against (PyTorch eager, fp32)
LLM_STAGES = ("llm_prefill", "llm_decode")   # the LLM graph's two stages: a prompt, then one token over a past
# the graphs of a tracked frame's step (the prompted decoder runs on the first frame only)
TRACKED_STEP_GRAPHS = (G.MASK_IMAGE_ENCODER, G.MEMORY_ATTENTION, G.MASK_DECODER_TRACKED, G.MEMORY_ENCODER)


@dataclass
class Plan:
    out: Path
    quick: bool = False
    backends: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16)
    artifacts: tuple[Path, ...] = ()
    providers: tuple[str, ...] | None = None
    torch_device: str = "cpu"
    threads: int = 2
    rounds: int = 5
    iters: int = 5
    warmup: int = 2
    stage_budget_s: float = 8.0
    source_fps: float = 30.0
    stream_frames: int = 90
    live_seconds: float = 3.0
    stream_budget_s: float = 60.0         # a file stream stops early past this (a slow variant on a busy machine)
    ttfr_rounds: int = 3
    sizes: tuple[str, ...] = ("tiny", "small", "videochat-tpo")
    size_precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16)
    size_call_cap_s: float = 20.0         # a size's graph whose floor x 4 predicts more per call is skipped
    prompt_lengths: tuple[int, ...] = (32, 64, 128, 256, 512)
    batches: tuple[int, ...] = (1, 2, 4)
    objects: tuple[int, ...] = (1, 2, 4)
    resolutions: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1280, 720))
    preprocess_sizes: tuple[tuple[int, int], ...] = ((320, 240), (1280, 720), (1920, 1080))
    cache: Path | None = None
    export_missing: bool = True           # export tiny artifacts that are not cached (quick: fp32 only)
    progress: bool = True

    @classmethod
    def quick_plan(cls, out: Path, **kw) -> Plan:
        base = dict(out=out, quick=True, rounds=3, iters=2, warmup=1, stage_budget_s=1.0, stream_frames=20,
                    live_seconds=1.0, ttfr_rounds=2, stream_budget_s=6.0, sizes=("tiny",), prompt_lengths=(32, 128),
                    batches=(1, 2), objects=(1, 2), size_precisions=(Precision.FP32,))
        base.update(kw)
        return cls(**base)

    @property
    def onnx_providers(self) -> list[str] | None:
        return list(self.providers) if self.providers else None
