"""`python -m tpo.train.connector_experiment`: the connector representation stage alone, and what it passes.

The recipe's generative stages can score on the prior whatever the connector does, so whether the connector
part works is judged before them (docs/training.md, "Issue 15"): stage 0's vision part (seed 0, with the given
settings, cached), what its tokens name (`probes.vision_shape_probe`), then `pretrain_connector` with the given
settings, then on held-out clips (seed 1000) what its slots say (`connector_probe`) and how much its output
depends on the input (`probes.connector_variation`). Prints one JSON object: settings, seconds, the last 20
steps' mean losses, the losses per 50 steps, the probes. --save keeps the weights (vision encoder and connector
trained) for a recipe run that starts from them.

    python -m tpo.train.connector_experiment --config tiny2d.json --steps 2000 --attention --layout cell \
        --vision-steps 2000 --vision-category-weight 1 --vision-lr 1e-3 --vision-pool-clips 300 [--save parts.pt]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tpo.data.synthetic import make_clip
from tpo.model.config import load_config
from tpo.model.tpo_model import build_model

from .connector_pretrain import CATEGORY_PREFIX, LAYOUTS, connector_probe, pretrain_connector
from .probes import connector_variation, vision_shape_probe
from .vision_pretrain import pretrain_vision_encoder

CURVE_EVERY = 50


def curve(records: list[dict], every: int = CURVE_EVERY) -> dict[str, list[float]]:
    """Mean of each loss part over consecutive runs of `every` steps."""
    parts = ("presence", "l1", "giou", "attention", "coverage")
    keys = [k for k in (*parts, *(CATEGORY_PREFIX + p for p in parts)) if k in records[0]]
    return {k: [round(float(np.mean([r[k] for r in records[i:i + every]])), 3)
                for i in range(0, len(records), every)] for k in keys}


def vision_part(model, config: str, vision: dict, cache_dir: Path | None) -> None:
    """Stage 0's vision part with the settings `vision` (steps, category_weight, lr, pool_clips), cached."""
    name = "_".join(f"{k}{v:g}" for k, v in sorted(vision.items()))
    cache = None if cache_dir is None else cache_dir / f"vision_{Path(config).stem}_{name}.pt"
    if cache is not None and cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True), strict=True)
        return
    pretrain_vision_encoder(model, seed=0, **vision)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)


def run(config: str, steps: int, lr: float, vision_lr: float, attention: bool, held_clips: int,
        cache_dir: Path | None, layout: str, vision: dict, save: Path | None = None) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    vision_part(model, config, vision, cache_dir)
    held = [make_clip(i, 1000) for i in range(held_clips)]
    shape = vision_shape_probe(model, held)
    before = connector_variation(model, held[:8])
    t0 = time.time()
    records: list[dict] = []
    _, head = pretrain_connector(model, steps=steps, seed=0, lr=lr, vision_lr=vision_lr, attention=attention,
                                 layout=layout, log=records.append)
    if save is not None:
        torch.save(model.state_dict(), save)
    tail = {k: v[-1] for k, v in curve(records[-20:], every=20).items()}
    return {"settings": {"config": config, "steps": steps, "lr": lr, "vision_lr": vision_lr, "attention": attention,
                         "layout": layout, "vision_part": vision},
            "seconds": round(time.time() - t0, 1), "tail_losses": tail, "curve": curve(records),
            "vision_shape": shape, "variation_before": before,
            "variation_after": connector_variation(model, held[:8]), "probe": connector_probe(model, head, held)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.train.connector_experiment", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help="configuration name or JSON path")
    p.add_argument("--steps", type=int, default=300, help="connector steps")
    p.add_argument("--lr", type=float, default=1e-3, help="connector (and slot head) peak learning rate")
    p.add_argument("--vision-lr", type=float, default=5e-4, help="vision encoder peak learning rate in the connector part")
    p.add_argument("--attention", action="store_true", help="supervise where each slot's query looks")
    p.add_argument("--layout", choices=LAYOUTS, default="category", help="what each slot describes")
    p.add_argument("--vision-steps", type=int, default=400, help="the vision part's steps")
    p.add_argument("--vision-category-weight", type=float, default=0.0, help="the vision part's category loss weight")
    p.add_argument("--vision-part-lr", type=float, default=2e-3, help="the vision part's peak learning rate")
    p.add_argument("--vision-pool-clips", type=int, default=100, help="clips the vision part draws from")
    p.add_argument("--held-clips", type=int, default=24, help="held-out clips (seed 1000)")
    p.add_argument("--cache", type=Path, default=None, help="folder caching the vision part's weights")
    p.add_argument("--save", type=Path, default=None, help="write the trained weights here (a state dict)")
    a = p.parse_args(argv)
    if min(a.steps, a.held_clips, a.vision_steps, a.vision_pool_clips) < 1:
        p.error("--steps, --held-clips, --vision-steps and --vision-pool-clips must be >= 1")
    vision = {"steps": a.vision_steps, "category_weight": a.vision_category_weight, "lr": a.vision_part_lr,
              "pool_clips": a.vision_pool_clips}
    print(json.dumps(run(a.config, a.steps, a.lr, a.vision_lr, a.attention, a.held_clips, a.cache, a.layout,
                         vision, a.save)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
