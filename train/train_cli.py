"""`tpo-train`: run the TPO recipe on synthetic data and write a checkpoint in the release layout.

    tpo-train --config tiny --out DIR [--stages 0,1,2,3] [--heads region,temporal,track] [--seed N]

Re-running with the same --out resumes from the last saved step. The final checkpoint is written to
DIR/checkpoint (fp16 safetensors, release names, with the tokenizer); per-step logs to DIR/log.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from tpo.errors import TPOError

from .recipe import HEADS, STAGES, RecipeConfig


def parse_list(text: str, kind=str) -> tuple:
    return tuple(kind(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    d = RecipeConfig()
    p = argparse.ArgumentParser(prog="tpo-train", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=d.config)
    p.add_argument("--out", required=True)
    p.add_argument("--stages", default=",".join(map(str, d.stages)), help=f"subset of {list(STAGES)}")
    p.add_argument("--heads", default=",".join(d.heads), help=f"subset of {list(HEADS)} (with conversation data)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-clips", type=int, default=d.train_clips)
    p.add_argument("--queries-per-task", type=int, default=d.queries_per_task,
                   help="queries of each task per training clip")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    for s in STAGES:
        p.add_argument(f"--stage{s}-steps", type=int, default=d.steps(s))
    p.add_argument("--vision-steps", type=int, default=d.vision_steps,
                   help="stage 0: vision encoder pretraining steps (0: none)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction, default=d.freeze_vision,
                   help="leave the stage-0 vision encoder out of stages 1-3")
    p.add_argument("--temporal-weight", type=float, default=d.temporal_weight)
    p.add_argument("--eval-clips", type=int, default=0, help="score the result on this many held-out clips")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        stages = parse_list(args.stages, int)
    except ValueError:
        print(f"tpo-train: error: --stages must be a comma list of integers, got {args.stages!r}", file=sys.stderr)
        return 2
    try:
        rc = RecipeConfig(
            config=args.config, seed=args.seed, train_clips=args.train_clips,
            queries_per_task=args.queries_per_task, batch_size=args.batch_size, vision_steps=args.vision_steps,
            freeze_vision=args.freeze_vision,
            lr=args.lr, temporal_weight=args.temporal_weight, heads=parse_list(args.heads), stages=stages,
            **{f"stage{s}_steps": getattr(args, f"stage{s}_steps") for s in STAGES},
        )
        from .recipe import finish, train

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
