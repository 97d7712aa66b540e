"""`tpo-eval`: score a checkpoint on a `tpo-data` dataset with each benchmark's standard metric.

    tpo-eval --data DIR [--checkpoint DIR | --runtime ARTIFACTS] [--config NAME] [--json] [--max-clips N]
             [--tasks track region temporal conversation] [--frames video|render] [--out FILE] [--no-swap]

Without --checkpoint the embedded checkpoint (`tpo.model` package data) is used. The tokenizer is the
checkpoint folder's own, else the configuration's. The model sees the decoded videos unless
`--frames render`; ground truth always comes from the annotations. `--out` also writes one JSON line
per query (predictions, ground truth, score). Every metric is printed beside its best blind baseline and the
margin over it; the query-swap test asks each region and track query again about another object of the clip.
`--runtime ARTIFACTS` scores an export through `tpo-run` instead (`tpo.train.runtime_eval`). Scoring rules:
`tpo.train.evaluate`.
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


def margin_table(result: dict) -> str:
    """Every metric beside its best blind baseline and the margin over it (what the metric is worth)."""
    rows = []
    for task, values in result["metrics"].items():
        items = [(task, values)] if not isinstance(values, dict) else [(f"{task}/{k}", v) for k, v in values.items()]
        for name, value in items:
            key = name.split("/", 1)
            m = result["margins"].get(key[0], {})
            m = m.get(key[1]) if len(key) == 2 else m
            best = f"{m['baseline_value']:.4f} ({m['baseline']})" if m else "-"
            margin = f"{m['margin']:+.4f}" if m else "-"
            rows.append((name, f"{value:.4f}", best, margin))
    head = ("metric", "model", "best blind baseline", "margin")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{widths[i]}}}" for i in range(4))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def print_report(result: dict) -> None:
    c = result["counts"]
    print(f"checkpoint {result['checkpoint']}")
    print(f"data {result['data']} ({result['frames']}): {c['clips']} clips, {c['queries']} queries "
          f"({', '.join(f'{t} {n}' for t, n in c['queries_per_task'].items())})")
    print(margin_table(result))
    for task, s in result.get("swap", {}).items():
        print(f"query swap, {task}: {s['pass_rate']:.2f} of {s['clips']} clips answer about the object asked "
              "(the same clip asked about another object)")
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
    p.add_argument("--no-swap", action="store_true",
                   help="skip the query-swap test (each region and track query asked again about another object)")
    p.add_argument("--runtime", default=None, metavar="ARTIFACTS",
                   help="score a tpo-export folder through tpo-run (one process per query) instead of a checkpoint")
    p.add_argument("--threads", type=int, default=1, help="with --runtime: tpo-run's engine threads")
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
    if args.runtime is not None:
        if args.checkpoint is not None:
            raise ConfigError("--runtime scores an export, --checkpoint a checkpoint: give one of them")
        if not (Path(args.runtime) / "manifest.json").is_file():
            raise InputError(f"--runtime {args.runtime}: no manifest.json there (make one with tpo-export)")
        if args.frames != "video":
            raise ConfigError("--runtime reads the dataset's videos: --frames render does not apply")
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be >= 1")
    if args.out is not None and Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: is a folder; give a file for the JSON lines")


@one_line_errors("tpo-eval")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        from .evaluate import evaluate  # torch and the model: only once the arguments are right

        data = Path(args.data)
        dataset = load_dataset(data, frames=args.frames)
        if args.runtime is not None:
            from .runtime_eval import runtime_asker

            model = tokenizer = None
            path = f"{args.runtime} (through tpo-run)"
            ask = runtime_asker(Path(args.runtime), data, threads=args.threads)
        else:
            model, tokenizer, path = load_model(args.checkpoint, args.config)
            ask = None
        result = evaluate(model, tokenizer, dataset, max_clips=args.max_clips, tasks=args.tasks,
                          progress=not args.json, records=args.out is not None, swap=not args.no_swap, ask=ask)
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
