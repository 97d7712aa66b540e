"""Where the image information stops: probes on a checkpoint's parts, against what its heads score.

The tiny checkpoint misses the region, answer and tracking bars (docs/training.md). These probes locate
the causes:

- `connector_variation`: how much the connector's output tokens vary across inputs, relative to their
  spread; near 0 means the LLM gets the same visual tokens for every image (it cannot look).
- `vision_region_probe`: a ridge-regression probe (closed form, no training loop) from the vision
  encoder's normalised tokens to the coverage of each colour-shape category in each sub-cell of a patch
  (the stage-0 targets, `vision_pretrain.patch_targets`), fitted on single frames of training clips.
  On each held-out region query the asked category's predicted coverage map (14 x 14 at tiny) is
  thresholded at half its maximum and the bounding box of the cells above it is the probe's box. If
  this scores where the region head scores 0, the vision features hold the "where" and the loss
  happens downstream (connector -> LLM -> head).
- `vision_shape_probe`: the same kind of ridge probe, per token, to the category that covers the token most
  (tokens an object covers by `SHAPE_MIN_COVER` or more): how often it names the colour, and where the colour
  is right, the shape (chance 1/3). The questions name objects by both; tiny's tokens held the colour only.
- `track_prompt_probe`: the frozen mask head tracking each held-out track query from three frame-0
  prompts: the exact box (through SAM2's own prompt encoder), a fixed centre box, and the model's own
  prompt (the track adapter's output). Equal scores mean the clip-level result is decided by the
  tracker's memory path, not by the prompt; the first-frame mask IoU shows the prompt itself is used.
- `blind_answer_em`: the exact match a model reading only the question can reach (the majority answer
  per question type on the same clips): answers at this level mean the LLM does not read the image.
- `region_reading`: the region head's Acc@0.5 on clips of the training stream against held-out clips (teacher
  forced: the box read at the placeholder, as in training), and with cell slots the region task token's attention
  on the asked object's cell slot at each LLM layer (head mean, the quantity `slot_attention` supervises). A head
  that scores on the training stream only has memorised; an attention that finds the slot on training clips only
  has learnt the clips, not the question.

    python -m tpo.train.probes [--checkpoint DIR] [--train-clips 60] [--train-seed 0] [--held-clips 30]
                               [--track-clips 12] [--connector-layout cell|both|category] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from tpo.contract.tasks import REGION
from tpo.data import metrics
from tpo.data.synthetic import CATEGORIES, SHAPES, Clip, make_clip
from tpo.errors import InputError, TPOError
from tpo.model.heads import HEADS

from .recipe_config import CONNECTOR_LAYOUTS, SLOT_ATTENTION_LAYOUTS
from .sample import frames_to_pixels, resize_frames
from .slot_attention import SlotMap
from .vision_pretrain import SUB, VisionPool, category_maps, patch_targets

RIDGE = 1.0            # ridge penalty on the probe's weights (features are layer-normalised, so O(1))
THRESHOLD = 0.5        # a cell belongs to the object when its coverage is over this fraction of the map's max


def _tokens(model, frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 [1, S, S, 3] frames -> normalised vision tokens [N, g*g, Dv]."""
    pixels = torch.stack([frames_to_pixels(f, model.cfg) for f in frames])
    with torch.no_grad():
        return model.vision_layernorm(model.vision_encoder(pixels)).float()


def fit_coverage_probe(model, train_clips: int, seed: int) -> torch.Tensor:
    """Ridge weights [Dv + 1, SUB*SUB*C] from tokens (+ bias) to sub-cell coverage, on single frames."""
    cfg = model.cfg.vision
    pool = VisionPool(train_clips, seed, cfg.image_size, cfg.image_size // cfg.patch_size, cfg.num_frames)
    x = torch.cat([_tokens(model, [f for f, _ in pool.images[i:i + 64]]).flatten(0, 1)
                   for i in range(0, len(pool.images), 64)])
    y = torch.cat([t for _, t in pool.images])
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    gram = x.T @ x + RIDGE * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(gram, x.T @ y.double()).float()


SHAPE_MIN_COVER = 0.3   # a token belongs to an object (for the shape probe) when it covers this much of it


def vision_shape_probe(model, held: list[Clip], train_clips: int = 40, seed: int = 0) -> dict:
    """Per token an object covers, what a coverage probe (`fit_coverage_probe`) names: colour accuracy, and
    shape accuracy where the colour is right, on 4 frames of each held-out clip."""
    weights = fit_coverage_probe(model, train_clips, seed)
    cfg = model.cfg.vision
    grid = cfg.image_size // cfg.patch_size
    rng = np.random.default_rng([seed, 11])
    true, pred = [], []
    for clip in held:
        index = np.sort(rng.choice(clip.num_frames, size=min(4, clip.num_frames), replace=False))
        tokens = _tokens(model, [resize_frames(clip.frames[t:t + 1], cfg.image_size) for t in index]).flatten(0, 1)
        cover = patch_targets(category_maps(clip, index), grid).unflatten(-1, (SUB * SUB, len(CATEGORIES))).mean(1)
        guess = (torch.cat([tokens, torch.ones(len(tokens), 1)], dim=1) @ weights)
        guess = guess.unflatten(-1, (SUB * SUB, len(CATEGORIES))).mean(1)
        on = cover.amax(-1) >= SHAPE_MIN_COVER
        true.append(cover[on].argmax(-1))
        pred.append(guess[on].argmax(-1))
    t, p = torch.cat(true), torch.cat(pred)
    if not len(t):
        raise InputError("held-out clips: no token an object covers")
    colour = (t // len(SHAPES)) == (p // len(SHAPES))
    return {"tokens": len(t), "colour_accuracy": float(colour.float().mean()),
            "shape_accuracy_given_colour": float((t == p)[colour].float().mean()) if colour.any() else 0.0}


def box_from_map(cover: np.ndarray, width: int, height: int) -> list[float]:
    """A [G, G] coverage map -> the pixel box (x1, y1, x2, y2) of the cells over THRESHOLD x its max."""
    g = cover.shape[0]
    ys, xs = np.nonzero(cover > THRESHOLD * cover.max())
    if len(xs) == 0:     # an all-zero map: nothing found
        return [0.0, 0.0, 0.0, 0.0]
    return [xs.min() / g * width, ys.min() / g * height, (xs.max() + 1) / g * width, (ys.max() + 1) / g * height]


def category_of(question: str) -> int:
    hits = [k for k, (colour, shape) in enumerate(CATEGORIES) if f"{colour} {shape}" in question]
    if len(hits) != 1:
        raise InputError(f"region question {question!r}: names {len(hits)} colour-shape categories, need one")
    return hits[0]


def vision_region_probe(model, held: list[Clip], train_clips: int = 60, seed: int = 0) -> dict:
    """The probe's Acc@0.5 and mIoU on the region queries of `held` (see the module docstring)."""
    weights = fit_coverage_probe(model, train_clips, seed)
    size, g = model.cfg.vision.image_size, model.cfg.vision.image_size // model.cfg.vision.patch_size
    ious = []
    for clip in held:
        for q in (q for q in clip.queries if q.task == "region"):
            tokens = _tokens(model, [resize_frames(clip.frames[q.frame:q.frame + 1], size)])[0]   # (g*g, Dv)
            pred = torch.cat([tokens, torch.ones(len(tokens), 1)], dim=1) @ weights              # (g*g, s*s*C)
            cover = pred.reshape(g, g, SUB, SUB, len(CATEGORIES))[..., category_of(q.question)]
            cover = cover.permute(0, 2, 1, 3).reshape(g * SUB, g * SUB).numpy()
            ious.append(float(metrics.box_iou(box_from_map(cover, clip.spec.width, clip.spec.height), q.box)))
    if not ious:
        raise InputError("held-out clips: no region queries to probe")
    return {"queries": len(ious), "Acc@0.5": float(np.mean(np.array(ious) >= 0.5)), "mIoU": float(np.mean(ious))}


CENTRE_BOX = (0.4, 0.4, 0.6, 0.6)     # normalised x1, y1, x2, y2: a prompt that ignores the image


def track_prompt_probe(model, tokenizer, held: list[Clip]) -> dict:
    """Per prompt (exact box, centre box, the model's own): clip-level success AUC and J&F, and the
    frame-0 mask IoU, over the track queries of `held` whose object is in frame 0."""
    from tpo.model.generate import generate
    from tpo.model.mask_tracker import track_clip
    from tpo.model.preprocess import Video, mask_pixels

    from .sample import norm_box

    cfg = model.cfg
    scores: dict[str, dict[str, list[float]]] = {k: {"success_AUC": [], "J&F": [], "frame0_IoU": []}
                                                 for k in ("exact_box", "centre_box", "model")}
    for clip in held:
        pixels = mask_pixels(clip.frames, cfg.mask_head.image_size, cfg.pixel_mean, cfg.pixel_std)  # once per clip
        size = tuple(clip.frames.shape[1:3])
        for q in (q for q in clip.queries if q.task == "track" and clip.box(0, q.object_id) is not None):
            exact = norm_box(clip.box(0, q.object_id), clip.spec.width, clip.spec.height)[None]
            gt_boxes, gt_masks = [clip.box(t, q.object_id) for t in range(clip.num_frames)], clip.masks(q.object_id)
            runs = {name: track_clip(model.sam, pixels, model.sam.prompt_embedding(box), size)[:2]
                    for name, box in (("exact_box", exact), ("centre_box", torch.tensor([CENTRE_BOX])))}
            result = generate(model, tokenizer, Video(clip.frames, clip.fps), q.question)
            routed = result.task == "track"       # a wrong first trigger tracks nothing (evaluate's miss rule)
            runs["model"] = ((list(result.track[0].masks), result.track[0].boxes) if routed
                             else ([None] * len(gt_boxes), [None] * len(gt_boxes)))
            for name, (masks, boxes) in runs.items():
                scores[name]["success_AUC"].append(metrics.tracking_success_auc(boxes, gt_boxes))
                scores[name]["J&F"].append(metrics.jf_score(masks, gt_masks)["J&F"])
                scores[name]["frame0_IoU"].append(metrics.jf_score(masks[:1], gt_masks[:1])["J"])
    n = len(scores["model"]["J&F"])
    if not n:
        raise InputError("held-out clips: no track queries with the object in frame 0")
    return {"queries": n, **{k: {m: float(np.mean(v)) for m, v in d.items()} for k, d in scores.items()}}


def blind_answer_em(held: list[Clip]) -> dict:
    """Exact match of the majority answer per question type (the question minus its object words)."""
    by_type: dict[str, list[str]] = {}
    for clip in held:
        for q in (q for q in clip.queries if q.task == "conversation"):
            by_type.setdefault(" ".join(q.question.split()[:2]), []).append(q.answer)
    n = sum(len(v) for v in by_type.values())
    if not n:
        raise InputError("held-out clips: no conversation queries")
    return {"queries": n, "exact_match": sum(Counter(v).most_common(1)[0][1] for v in by_type.values()) / n}


@torch.no_grad()
def region_reading(model, tokenizer, train: list[Clip], held: list[Clip], slots: SlotMap | None) -> dict:
    """Per clip set ("train": clips of the training stream, "held"): the region head's Acc@0.5 with the answer
    teacher forced, and where `slots` is given the region task token's head-mean attention on the asked object's
    cell slot at each LLM layer (a list, layer 0 first). See the module docstring."""
    from .recipe import _batch_embeddings, eager_attention
    from .samples import clip_samples
    from .slot_attention import slot_position

    out: dict = {"layout_has_cells": slots is not None}
    with eager_attention(model, slots is not None):
        for name, clips in (("train", train), ("held", held)):
            samples = [s for c in clips for s in clip_samples(c, model.cfg, tokenizer) if s.route == REGION.name]
            if not samples:
                raise InputError(f"{name} clips: no region queries to read")
            hits, attention = [], []
            for i in range(0, len(samples), 16):
                batch = samples[i:i + 16]
                x, mask, _ = _batch_embeddings(model, batch)
                res = model.lm(inputs_embeds=x, attention_mask=mask, output_hidden_states=True,
                               output_attentions=slots is not None, use_cache=False)
                hidden = torch.stack([res.hidden_states[-1][j, s.placeholder] for j, s in enumerate(batch)])
                boxes = HEADS[REGION.name].route(model, hidden).float()
                hits += [float(metrics.box_iou(b.tolist(), s.box.tolist())) >= 0.5
                         for b, s in zip(boxes, batch, strict=True)]
                if slots is not None:
                    attention += [[float(a[j, :, s.placeholder, slot_position(s, slots.cells_per_side)].mean())
                                   for a in res.attentions] for j, s in enumerate(batch)]
            out[name] = {"queries": len(samples), "head_Acc@0.5": float(np.mean(hits)),
                         "slot_attention_by_layer": np.mean(attention, axis=0).tolist() if attention else None}
    return out


@torch.no_grad()
def connector_variation(model, held: list[Clip]) -> dict:
    """How much the connector's output depends on the image: over the region frames of `held` (as images) and
    the clips' videos, the standard deviation across inputs of each output element, averaged, over the standard
    deviation of all elements. Near 0: the connector gives the same tokens whatever it sees (the LLM is blind)."""
    cfg = model.cfg
    out = {}
    for media in ("image", "video"):
        if media == "image":
            frames = [resize_frames(c.frames[q.frame:q.frame + 1], cfg.vision.image_size)
                      for c in held for q in c.queries if q.task == "region"]
        else:
            from tpo.model.preprocess import middle_frame_indices

            frames = [resize_frames(c.frames[middle_frame_indices(cfg.vision.num_frames, c.num_frames)],
                                    cfg.vision.image_size) for c in held]
        tokens = torch.cat([model.encode_visual(torch.stack([frames_to_pixels(f, cfg) for f in frames[i:i + 16]]))
                            for i in range(0, len(frames), 16)]).float()                 # (N, Q, H)
        out[media] = float(tokens.std(dim=0).mean() / tokens.std())
    return {"inputs": len(held), "across_input_std_over_std": out}


def run(model, tokenizer, held: list[Clip], train_clips: int, seed: int, track_clips: int,
        slots: SlotMap | None = None) -> dict:
    from tpo.data.files import Dataset

    from .evaluate import evaluate

    heads = evaluate(model, tokenizer, Dataset(root=Path("held-out"), meta={}, clips=held),
                     tasks=("region", "conversation"))["metrics"]
    return {"connector": connector_variation(model, held),
            "region_head": heads["region"], "vision_probe": vision_region_probe(model, held, train_clips, seed),
            "region_reading": region_reading(model, tokenizer, [make_clip(i, seed) for i in range(train_clips)],
                                             held, slots),
            "answers": heads["conversation"], "blind_answers": blind_answer_em(held),
            "track": track_prompt_probe(model, tokenizer, held[:track_clips])}


def recorded_layout(checkpoint: Path) -> str | None:
    """The connector layout the checkpoint was trained with, from the training.json beside it (a record older
    than the setting: the recipe's default then); None without a record."""
    from tpo.model.checkpoint import resolve_checkpoint

    from .recipe_config import RecipeConfig

    record = resolve_checkpoint(checkpoint).root / "training.json"
    if not record.is_file():
        return None
    try:
        recipe = json.loads(record.read_text()).get("recipe", {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise InputError(f"{record}: not a training record (a JSON object with a 'recipe'): {e}") from None
    return recipe.get("connector_layout", RecipeConfig().connector_layout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.train.probes", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="checkpoint folder (default: the embedded one)")
    p.add_argument("--train-clips", type=int, default=60,
                   help="clips of the training stream: the vision probe is fitted on them, the region head is "
                        "read on them")
    p.add_argument("--train-seed", type=int, default=0, help="the training stream's seed (the recipe's --seed)")
    p.add_argument("--connector-layout", choices=CONNECTOR_LAYOUTS,
                   help="the layout the connector was trained with (default: from training.json beside the "
                        "checkpoint); with cell slots the region token's attention on the asked slot is read")
    p.add_argument("--held-clips", type=int, default=30, help="held-out clips (seed 1000)")
    p.add_argument("--track-clips", type=int, default=12, help="the first N held-out clips for the track probe")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    try:
        if min(a.train_clips, a.held_clips, a.track_clips) < 1:
            raise InputError("--train-clips, --held-clips and --track-clips must be >= 1")
        from .eval_cli import load_model

        torch.set_num_threads(1)
        model, tokenizer, path = load_model(a.checkpoint, None)
        layout = a.connector_layout or recorded_layout(path)
        slots = SlotMap.of(model.cfg, layout) if layout in SLOT_ATTENTION_LAYOUTS else None
        out = run(model, tokenizer, [make_clip(i, 1000) for i in range(a.held_clips)], a.train_clips,
                  seed=a.train_seed, track_clips=a.track_clips, slots=slots)
        out["region_reading"]["connector_layout"] = layout
    except TPOError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(out))
    else:
        v = out["connector"]["across_input_std_over_std"]
        print(f"connector output, across-input std / std: images {v['image']:.3f}, videos {v['video']:.3f}")
        print(f"region Acc@0.5: head {out['region_head']['Acc@0.5']:.2f}, linear probe on its vision tokens "
              f"{out['vision_probe']['Acc@0.5']:.2f} (mIoU {out['vision_probe']['mIoU']:.2f}, "
              f"{out['vision_probe']['queries']} queries)")
        r = out["region_reading"]
        print(f"region head Acc@0.5, answer teacher forced: training-stream clips {r['train']['head_Acc@0.5']:.2f} "
              f"({r['train']['queries']} queries), held-out {r['held']['head_Acc@0.5']:.2f}")
        if r["layout_has_cells"]:
            for name in ("train", "held"):
                layers = ", ".join(f"{v:.2f}" for v in r[name]["slot_attention_by_layer"])
                print(f"region token's attention on the asked cell slot, by layer ({name}): {layers}")
        else:
            why = "no training.json beside the checkpoint: pass --connector-layout" if r["connector_layout"] is None \
                else f"connector layout {r['connector_layout']!r} has no cell slots"
            print(f"region token's attention on the asked cell slot: not read ({why})")
        gap = out['answers']['exact_match'] - out['blind_answers']['exact_match']
        print(f"answer exact match: model {out['answers']['exact_match']:.2f}, blind majority per question type "
              f"{out['blind_answers']['exact_match']:.2f} (gap {gap:+.2f}, {out['blind_answers']['queries']} queries)")
        t = out["track"]
        for name in ("exact_box", "centre_box", "model"):
            print(f"track from the {name.replace('_', ' ')} prompt: success AUC {t[name]['success_AUC']:.3f}, "
                  f"J&F {t[name]['J&F']:.3f}, frame-0 mask IoU {t[name]['frame0_IoU']:.2f} ({t['queries']} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
