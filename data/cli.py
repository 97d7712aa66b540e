"""`tpo-data`: write and inspect synthetic grounding datasets.

    tpo-data make --out DIR --clips N --seed S [--width 320 --height 240 ... --overwrite]
    tpo-data info DIR [--json]

Defaults come from `SceneConfig`. Errors a user can cause print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from tpo.errors import TPOError, one_line_errors

from .synthetic import SceneConfig

# SceneConfig fields exposed as flags (ranges take two values, low high), with what each means.
_FLAG_HELP = {
    "width": "frame width in pixels",
    "height": "frame height in pixels",
    "fps_range": "frames per second of a clip, drawn per clip (integers, both ends included)",
    "duration_range_s": "clip length in seconds, drawn per clip",
    "num_objects_range": "objects per clip",
    "size_range_px": "object size in pixels (circle diameter, square side, triangle base)",
    "speed_range_px_s": "object speed in pixels per second",
    "p_noise_background": "probability of a noise background (else a plain dark colour)",
    "p_window": "per object: probability that it is in the scene for one window only (enters and/or leaves)",
    "p_return": "per object: probability that it is in view at the start, leaves and comes back",
    "span_fraction_range": "length of an object's window, as a fraction of the clip (drawn log-uniform)",
    "min_span_s": "shortest window (and part of a return) in seconds",
    "p_crossing": "per clip of >= 2 objects: probability that two of them cross, one behind the other",
    "min_visible_s": "every object is visible at least this many seconds in total",
    "queries_per_task": "queries of each task (track, region, temporal, conversation) per clip",
    "qvh_clip_length_s": "QVHighlights clip length in seconds (relevant_clip_ids, saliency_scores)",
}
_FLAGS = tuple(_FLAG_HELP)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    defaults = SceneConfig()
    types = {f.name: f.type for f in fields(SceneConfig)}
    for name in _FLAGS:
        value = getattr(defaults, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            kind = int if "int" in str(types[name]) else float
            p.add_argument(flag, type=kind, nargs=2, metavar=("LOW", "HIGH"), default=None,
                           help=f"{_FLAG_HELP[name]} (default {value[0]} {value[1]})")
        else:
            p.add_argument(flag, type=type(value), default=None, help=f"{_FLAG_HELP[name]} (default {value})")


def _config_from_args(args: argparse.Namespace) -> SceneConfig:
    given = {n: getattr(args, n) for n in _FLAGS if getattr(args, n) is not None}
    return SceneConfig.from_dict(given)


def print_meta(meta: dict) -> None:
    c = meta["counts"]
    print(f"{meta['clips']} clips, seed {meta['seed']}, generator v{meta['version']}, video {meta['video_codec']} "
          f"({meta['video_ext']})")
    print(f"  frames {c['frames']:,}, box/mask annotations {c['annotations']:,}, queries {c['queries']:,}")
    print("  queries per task: " + ", ".join(f"{k} {v}" for k, v in c["queries_per_task"].items()))
    print("  spread: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in meta["stats"].items()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tpo-data", description="Synthetic grounding clips with ground truth.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pm = sub.add_parser("make", help="write videos and annotations (COCO, QVHighlights, queries)",
                        description="Write N synthetic clips (videos, COCO boxes and masks, QVHighlights "
                                    "windows, queries) into --out; the same --seed writes the same data.")
    pm.add_argument("--out", required=True, help="output folder (new or empty)")
    pm.add_argument("--clips", type=int, required=True, help="number of clips to write (>= 1)")
    pm.add_argument("--seed", type=int, required=True,
                    help="seed of everything drawn: the same seed and settings give the same clips")
    pm.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    pm.add_argument("--json", action="store_true", help="print meta.json instead of a summary")
    _add_config_flags(pm)
    pi = sub.add_parser("info", help="summarise a dataset folder (reads meta.json)")
    pi.add_argument("dir", help="dataset folder written by `tpo-data make`")
    pi.add_argument("--json", action="store_true", help="print meta.json instead of a summary")
    return p


@one_line_errors("tpo-data")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "make":
            from .files import make_dataset

            meta = make_dataset(out_dir=args.out, clips=args.clips, seed=args.seed, config=_config_from_args(args),
                                overwrite=args.overwrite, progress=not args.json)
        else:
            from .files import read_meta

            meta = read_meta(args.dir)
        print(json.dumps(meta, indent=2)) if args.json else print_meta(meta)
    except TPOError as e:
        print(f"tpo-data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
