"""`tpo-train`: run the TPO recipe on synthetic data and write a checkpoint in the release layout.

    tpo-train --config tiny --out DIR [--stages 0,1,2,3] [--heads region,temporal,track] [--seed N]

Re-running with the same --out resumes from the last saved step. The final checkpoint is written to
DIR/checkpoint (fp16 safetensors, release names, with the tokenizer); per-step logs to DIR/log.jsonl.
Arguments are parsed and checked before torch and the recipe are imported, so --help and a wrong
argument answer at once; errors a user can cause print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from tpo.errors import ConfigError, InputError, TPOError, one_line_errors
from tpo.model.presets import check_config, preset_names

from .recipe_config import CONNECTOR_LAYOUTS, HEADS, STAGES, RecipeConfig

_STAGE_HELP = {
    0: "stage 0: mask head (SAM2) pretraining steps, then frozen",
    1: "stage 1: task assignment (which head a question goes to) steps",
    2: "stage 2: heads and task embeddings steps",
    3: "stage 3: joint co-training with conversation data steps",
}


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the recipe's defaults, but not the empty ones (required --out, on/off flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parse_list(text: str, kind=str) -> tuple:
    return tuple(kind(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    d = RecipeConfig()
    p = argparse.ArgumentParser(prog="tpo-train", description=__doc__.splitlines()[0],
                                formatter_class=_HelpWithDefaults)
    p.add_argument("--config", default=d.config,
                   help=f"model configuration: {', '.join(preset_names())}, or a .json file")
    p.add_argument("--out", required=True,
                   help="run folder: checkpoint/, log.jsonl and resumable state (an existing run resumes)")
    p.add_argument("--stages", default=",".join(map(str, d.stages)), help=f"comma list, subset of {list(STAGES)}")
    p.add_argument("--heads", default=",".join(d.heads),
                   help=f"comma list, subset of {list(HEADS)} (with conversation data)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data, the batches and the weights")
    p.add_argument("--train-clips", type=int, default=d.train_clips, help="synthetic clips in the training pool")
    p.add_argument("--queries-per-task", type=int, default=d.queries_per_task,
                   help="queries of each task per training clip")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="samples per step (whole clips: all queries of a clip share its frames)")
    for s in STAGES:
        p.add_argument(f"--stage{s}-steps", type=int, default=d.steps(s), help=_STAGE_HELP[s])
    p.add_argument("--vision-steps", type=int, default=d.vision_steps,
                   help="stage 0: vision encoder pretraining steps (0: none)")
    p.add_argument("--connector-steps", type=int, default=d.connector_steps,
                   help="stage 0: connector representation steps (slot descriptions; 0: none)")
    p.add_argument("--connector-attention", action=argparse.BooleanOptionalAction, default=d.connector_attention,
                   help="stage 0: also supervise where each connector slot looks (its category's vision tokens)")
    p.add_argument("--connector-layout", choices=CONNECTOR_LAYOUTS, default=d.connector_layout,
                   help="stage 0: what each connector slot describes (a colour-shape category, a cell of the frame, "
                        "or both: cell slots, then category slots)")
    p.add_argument("--vision-category-weight", type=float, default=d.vision_category_weight,
                   help="stage 0: weight of the vision part's per-token colour-shape loss (0: none)")
    p.add_argument("--vision-lr", type=float, default=d.vision_lr, help="stage 0: the vision part's peak learning rate")
    p.add_argument("--vision-pool-clips", type=int, default=d.vision_pool_clips,
                   help="stage 0: clips the vision part draws its frames from")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (warm-up, then cosine)")
    p.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction, default=d.freeze_vision,
                   help="leave the stage-0 vision encoder out of stages 1-3")
    p.add_argument("--freeze-connector", action=argparse.BooleanOptionalAction, default=d.freeze_connector,
                   help="leave the stage-0 connector out of stages 1-3")
    p.add_argument("--slot-attention", type=float, default=d.slot_attention,
                   help="stage 3: weight of the region and track task tokens' attention loss towards the asked "
                        "object's cell slot (with --connector-layout cell or both; 0: none)")
    p.add_argument("--temporal-weight", type=float, default=d.temporal_weight,
                   help="factor on the temporal head's set criterion in the joint loss")
    p.add_argument("--eval-clips", type=int, default=0, help="score the result on this many held-out clips")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def recipe_from_args(args: argparse.Namespace) -> RecipeConfig:
    """The recipe the arguments ask for, checked (one-line TPOError); imports nothing heavy."""
    try:
        stages = parse_list(args.stages, int)
    except ValueError:
        raise ConfigError(f"--stages must be a comma list of integers, got {args.stages!r}") from None
    check_config(args.config, "--config")
    for flag in ("train_clips", "queries_per_task", "batch_size", "vision_pool_clips"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 1")
    for flag in [f"stage{s}_steps" for s in STAGES] + ["vision_steps", "connector_steps", "eval_clips"]:
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 0")
    if args.vision_category_weight < 0:
        raise ConfigError(f"--vision-category-weight {args.vision_category_weight}: must be >= 0")
    for flag in ("lr", "vision_lr"):
        if not getattr(args, flag) > 0:
            raise ConfigError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be > 0")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    return RecipeConfig(
        config=args.config, seed=args.seed, train_clips=args.train_clips,
        queries_per_task=args.queries_per_task, batch_size=args.batch_size, vision_steps=args.vision_steps,
        connector_steps=args.connector_steps, connector_attention=args.connector_attention,
        connector_layout=args.connector_layout,
        vision_category_weight=args.vision_category_weight, vision_lr=args.vision_lr,
        vision_pool_clips=args.vision_pool_clips,
        freeze_vision=args.freeze_vision, freeze_connector=args.freeze_connector,
        slot_attention=args.slot_attention, lr=args.lr, temporal_weight=args.temporal_weight,
        heads=parse_list(args.heads), stages=stages,
        **{f"stage{s}_steps": getattr(args, f"stage{s}_steps") for s in STAGES},
    )


@one_line_errors("tpo-train")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = recipe_from_args(args)
        from .recipe import finish, train  # torch and the model: only once the arguments are right

        t0 = time.time()
        model, tok = train(rc, args.out, progress=not args.no_progress)
        path = finish(model, tok, args.out, rc, eval_clips=args.eval_clips, progress=not args.no_progress)
        print(f"trained in {time.time() - t0:.0f} s: {path}")
        print(dataclasses.asdict(rc))
    except TPOError as e:
        print(f"tpo-train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
