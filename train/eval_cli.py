"""`tpo-eval`: score a checkpoint on a `tpo-data` dataset with each benchmark's standard metric.

    tpo-eval --data DIR [--checkpoint DIR] [--config NAME] [--json] [--max-clips N]
             [--tasks track region temporal conversation] [--frames video|render] [--out FILE]

Without --checkpoint the embedded checkpoint (`tpo.model` package data) is used. The tokenizer is the
checkpoint folder's own, else the configuration's. The model sees the decoded videos unless
`--frames render`; ground truth always comes from the annotations. `--out` also writes one JSON line
per query (predictions, ground truth, score). Scoring rules: `tpo.train.evaluate`.
Errors a user can cause print one line and exit 2, before torch or the model is imported.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from tpo.data.files import load_dataset, read_meta
from tpo.data.synthetic import TASKS
from tpo.errors import CheckpointError, ConfigError, InputError, TPOError, one_line_errors
from tpo.model.presets import check_config, preset_names

FRAMES_DEFAULT = inspect.signature(load_dataset).parameters["frames"].default   # the library's default


def load_model(checkpoint: str | None, config: str | None):
    """(model, tokenizer, checkpoint path) in fp32; the embedded checkpoint when `checkpoint` is None."""
    from tpo.model.checkpoint import default_checkpoint, load_checkpoint, resolve_checkpoint
    from tpo.model.tokenizer import load_tokenizer

    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    model, cfg = load_checkpoint(path, config=config, dtype="fp32")
    root = resolve_checkpoint(path).root
    tokenizer = load_tokenizer(root if (root / "tokenizer.model").is_file() else cfg.tokenizer)
    return model, tokenizer, path


def print_report(result: dict) -> None:
    from tpo.data.metrics import format_table

    c = result["counts"]
    print(f"checkpoint {result['checkpoint']}")
    print(f"data {result['data']} ({result['frames']}): {c['clips']} clips, {c['queries']} queries "
          f"({', '.join(f'{t} {n}' for t, n in c['queries_per_task'].items())})")
    print(format_table(result["metrics"]))
    print(f"note: {result['scoring']}")
    routes = list(next(iter(c["confusion"].values())))
    width = max(len("expected"), *(len(r) for r in c["confusion"]))
    print("routing: expected route (rows) vs first trigger produced (columns)")
    print(f"{'expected':<{width}}  " + "  ".join(f"{r:>8}" for r in routes))
    for expected, row in c["confusion"].items():
        print(f"{expected:<{width}}  " + "  ".join(f"{row[r]:>8}" for r in routes))
    if "records_file" in result:
        print(f"per-query predictions: {result['records_file']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tpo-eval", description="Score a checkpoint on a tpo-data dataset.")
    p.add_argument("--data", required=True, help="dataset folder written by `tpo-data make`")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the embedded one)")
    p.add_argument("--config", default=None,
                   help=f"configuration ({', '.join(preset_names())}) or a .json file, for checkpoints "
                        "without tpo_config.json")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--max-clips", type=int, default=None, help="score only the first N clips")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="default: all")
    p.add_argument("--frames", choices=("video", "render"), default=FRAMES_DEFAULT,
                   help=f"model input: the decoded videos or exact re-renders (default {FRAMES_DEFAULT})")
    p.add_argument("--out", default=None, help="also write per-query predictions here (JSON lines)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model, so a wrong argument fails before torch is imported."""
    data = Path(args.data)
    if not data.is_dir():
        raise InputError(f"{data}: no such dataset folder; write one with tpo-data make --out DIR "
                         "--clips N --seed S")
    read_meta(data)
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        raise CheckpointError(f"--checkpoint {args.checkpoint}: no such checkpoint")
    if args.config is not None:
        check_config(args.config, "--config")
    if args.max_clips is not None and args.max_clips < 1:
        raise ConfigError(f"--max-clips {args.max_clips}: must be >= 1")
    if args.out is not None and Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: is a folder; give a file for the JSON lines")


@one_line_errors("tpo-eval")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        from .evaluate import evaluate  # torch and the model: only once the arguments are right

        data = Path(args.data)
        model, tokenizer, path = load_model(args.checkpoint, args.config)
        dataset = load_dataset(data, frames=args.frames)
        result = evaluate(model, tokenizer, dataset, max_clips=args.max_clips, tasks=args.tasks,
                          progress=not args.json, records=args.out is not None)
        result = {"checkpoint": str(path), "frames": args.frames, **result}
        if args.out is not None:
            out = Path(args.out)
            try:
                out.write_text("".join(json.dumps(r) + "\n" for r in result.pop("records")))
            except OSError as e:
                raise InputError(f"{out}: cannot write the predictions ({e.strerror})") from e
            result["records_file"] = str(out)
        print(json.dumps(result, indent=2)) if args.json else print_report(result)
    except TPOError as e:
        print(f"tpo-eval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
