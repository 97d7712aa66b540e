"""`tpo-model`: inspect configurations and checkpoints, and run the reference model.

    tpo-model info --config tiny [--json]
    tpo-model verify PATH --config videochat-tpo [--json]
    tpo-model demo [--checkpoint DIR] [--config tiny]
    tpo-model random --config videochat-tpo --out DIR [--seed 0] [--dtype bf16] [--shards 4] [--force]

Errors a user can cause print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tpo.errors import CheckpointError, TPOError, one_line_errors
from tpo.model.presets import check_config, preset_names

COMPONENTS = {
    "vision_encoder": ("vision_encoder.", "vision_layernorm."),
    "connector": ("connector.",),
    "llm (base)": ("lm.",),
    "llm (lora)": (),
    "task embeddings": ("box_token", "temporal_token", "track_token"),
    "task adapters": ("loc_encoder.", "loc_decoder.", "track_embed.", "track_embed_decode2."),
    "mask head (sam2)": ("sam.",),
    "temporal head (cg-detr)": ("cg_model.", "cg_criterion."),
    "unused at inference": ("temporal_embed.", "action_embed.", "merge_proj.", "project_down."),
}


def component_of(name: str) -> str:
    if name.startswith("lm.") and ".lora_" in name:
        return "llm (lora)"
    for comp, prefixes in COMPONENTS.items():
        if any(name.startswith(p) for p in prefixes):
            return comp
    raise AssertionError(f"tensor {name} belongs to no component")


def model_info(config: str) -> dict:
    from .checkpoint import build_skeleton
    from .config import load_config

    cfg = load_config(config)
    model = build_skeleton(cfg)
    per: dict[str, dict[str, int]] = {c: {"parameters": 0, "tensors": 0} for c in COMPONENTS}
    other_bytes = 0
    for name, t in model.state_dict().items():
        comp = component_of(name)
        if t.is_floating_point():
            per[comp]["parameters"] += t.numel()
        else:
            other_bytes += t.numel() * t.element_size()
        per[comp]["tensors"] += 1
    total = sum(c["parameters"] for c in per.values())
    return {
        "config": cfg.name,
        "components": per,
        "parameters": total,
        "bytes": {"fp32": total * 4 + other_bytes, "fp16": total * 2 + other_bytes, "bf16": total * 2 + other_bytes},
        "integer_buffer_bytes": other_bytes,
    }


def print_info(info: dict) -> None:
    print(f"config {info['config']}: {info['parameters']:,} parameters")
    print(f"  {'component':<26}{'parameters':>16}{'tensors':>9}")
    for comp, c in info["components"].items():
        print(f"  {comp:<26}{c['parameters']:>16,}{c['tensors']:>9}")
    b = info["bytes"]
    print(f"  bytes: fp32 {b['fp32']:,}  fp16/bf16 {b['fp16']:,}  (integer buffers {info['integer_buffer_bytes']:,})")


def print_verify(path: str, report: dict) -> None:
    status = "OK" if report["ok"] else "MISMATCH"
    print(f"{path}: {status}")
    print(f"  matched {report['matched']}, missing {len(report['missing'])}, unexpected {len(report['unexpected'])}, "
          f"mismatched {len(report['mismatched'])}")
    print(f"  bytes: checkpoint {report['total_bytes']:,}, expected {report['expected_bytes']:,} "
          f"(floats stored as {report['stored_float_dtype']})")
    for name in report["missing"][:20]:
        print(f"  missing: {name}")
    for name in report["unexpected"][:20]:
        print(f"  unexpected: {name}")
    for m in report["mismatched"][:20]:
        print(f"  mismatched: {m}")
    for f in report["missing_files"]:
        print(f"  missing file: {f}")
    for n in report["notes"]:
        print(f"  note: {n}")


def demo(checkpoint: str | None, config: str | None) -> int:
    """Run `generate` on a generated clip for each task and print what each head returned."""
    import torch

    from tpo.contract.tasks import CHAT

    from .checkpoint import default_checkpoint, load_checkpoint
    from .demo import demo_video
    from .generate import GenerationResult, generate, run_head
    from .heads import HEADS
    from .tokenizer import load_tokenizer

    if checkpoint is None and config in (None, "tiny"):
        try:
            checkpoint = str(default_checkpoint())
        except CheckpointError as e:
            print(f"note: {e}; showing random weights instead", file=sys.stderr)
    if checkpoint is not None:
        model, cfg = load_checkpoint(checkpoint, config=config, dtype="fp32")
        tok = load_tokenizer(checkpoint)
        source = checkpoint
    else:
        from .config import load_config
        from .tpo_model import build_model

        cfg = load_config(config or "tiny")
        torch.manual_seed(0)
        model = build_model(cfg)
        tok = load_tokenizer(cfg.tokenizer)
        source = f"RANDOM weights ({cfg.name}): no trained checkpoint, so answers are noise"
    print(f"model: {source}")
    video = demo_video()
    print(f"clip: {video.frames.shape[0]} frames {video.size_hw[1]}x{video.size_hw[0]} at {video.fps} fps")
    for name, head in HEADS.items():
        question = head.example_question
        clip = type(video)(video.frames[:1], video.fps) if head.task.media == "image" else video
        res = generate(model, tok, clip, question, max_new_tokens=8)
        print(f"\n[{name}] Q: {question}\n  answer: {res.raw_text!r} (task routed: {res.task})")
        if res.task == CHAT:
            # random weights rarely emit a trigger; show the head anyway by forcing the trigger
            res = GenerationResult(text="", raw_text="", task=name, token_ids=[tok.convert_tokens_to_ids(head.task.trigger)])
            h = torch.zeros(cfg.llm.hidden_size) + model.task_embedding(name)[0, 0]
            run_head(model, tok, name, h, clip, question, res, None)
            print("  (no trigger emitted; head run on the task embedding to show its output)")
        for task, results in res.answers.items():
            for r in results:
                print(f"  {HEADS[task].describe(r)}")
    return 0


def random_checkpoint(args: argparse.Namespace) -> int:
    """`tpo-model random`: write the checkpoint, a progress line on stderr, a summary on stdout."""
    import time

    from .random_checkpoint import DTYPES, write_random_checkpoint

    if args.dtype not in DTYPES:          # before the model is built
        raise CheckpointError(f"--dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    start, last = time.perf_counter(), [0.0]

    def progress(shard: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 2.0 or done == total:
            last[0] = now
            print(f"\r{shard}: {done / 1e9:6.2f} / {total / 1e9:.2f} GB", end="", file=sys.stderr, flush=True)

    try:
        result = write_random_checkpoint(args.config, args.out, seed=args.seed, dtype=args.dtype,
                                         shards=args.shards, force=args.force, progress=progress)
    except KeyboardInterrupt:
        print(f"\ntpo-model: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 130
    print(file=sys.stderr)
    on_disk = sum(result.shards.values())
    print(f"wrote {result.path}: {result.tensors} tensors, {len(result.shards)} shards ({result.layout}), "
          f"{result.total_bytes:,} tensor bytes, {on_disk:,} bytes on disk, {time.perf_counter() - start:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(preset_names())
    p = argparse.ArgumentParser(prog="tpo-model", description="Inspect VideoChat-TPO configurations and checkpoints.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info", help=f"parameters per component and bytes per dtype (configs: {names})",
                        description=f"Parameters per component and bytes per dtype of a configuration: one of "
                                    f"{names}, or a .json file.")
    pi.add_argument("--config", required=True, help=f"configuration: {names}, or a .json file")
    pi.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    pv = sub.add_parser("verify", help="check a checkpoint's tensors against a configuration (headers only)")
    pv.add_argument("path", help="checkpoint folder, .safetensors file, or model.safetensors.index.json")
    pv.add_argument("--config", default=None,
                    help=f"configuration ({names}) or a .json file (default: the checkpoint's own)")
    pv.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    pd = sub.add_parser("demo", help="run generate() on a generated clip for each task")
    pd.add_argument("--checkpoint", default=None,
                    help="checkpoint folder (default: the embedded tiny one; random weights if it is absent)")
    pd.add_argument("--config", default=None, help=f"configuration ({names}) or a .json file (default: tiny)")
    pr = sub.add_parser("random", help="write random weights in the release layout (shards, index, tokenizer)",
                        description="Random weights at a configuration's exact names, shapes and dtypes, in the "
                                    "release's shard layout, written tensor by tensor (a few blocks in memory).")
    pr.add_argument("--config", required=True, help=f"configuration: {names}, or a .json file")
    pr.add_argument("--out", required=True, type=Path, help="checkpoint folder to write (refused if it exists)")
    pr.add_argument("--seed", type=int, default=0, help="seed of every tensor's values (default 0)")
    pr.add_argument("--dtype", default="bf16", help="float dtype as stored: bf16 (the release), fp16 or fp32")
    pr.add_argument("--shards", type=int, default=4, help="number of shards (default 4, the release's)")
    pr.add_argument("--force", action="store_true", help="replace an existing --out folder")
    return p


@one_line_errors("tpo-model")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # before torch: an unknown config name (listing the known ones) or a missing path fails at once
        if args.config is not None:
            check_config(args.config, "--config")
        path = getattr(args, "path", None) or getattr(args, "checkpoint", None)
        if path is not None and not Path(path).exists():
            raise CheckpointError(f"{path}: no such checkpoint file or folder")
        if args.cmd == "info":
            info = model_info(args.config)
            print(json.dumps(info, indent=2)) if args.json else print_info(info)
            return 0
        if args.cmd == "verify":
            from .checkpoint import verify_checkpoint

            report = verify_checkpoint(args.path, args.config).to_dict()
            print(json.dumps(report, indent=2)) if args.json else print_verify(args.path, report)
            return 0 if report["ok"] else 1
        if args.cmd == "random":
            return random_checkpoint(args)
        if args.cmd == "demo":
            return demo(args.checkpoint, args.config)
    except TPOError as e:
        print(f"tpo-model: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
