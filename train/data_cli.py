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

from tpo.errors import TPOError

from .synthetic import SceneConfig

# SceneConfig fields exposed as flags; ranges take two values (low high).
_FLAGS = ("width", "height", "fps_range", "duration_range_s", "num_objects_range", "size_range_px",
          "speed_range_px_s", "p_noise_background", "p_roaming", "p_crossing", "min_visible_s",
          "queries_per_task", "qvh_clip_length_s")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    defaults = SceneConfig()
    types = {f.name: f.type for f in fields(SceneConfig)}
    for name in _FLAGS:
        value = getattr(defaults, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            kind = int if "int" in str(types[name]) else float
            p.add_argument(flag, type=kind, nargs=2, metavar=("LOW", "HIGH"), default=None,
                           help=f"default {value[0]} {value[1]}")
        else:
            p.add_argument(flag, type=type(value), default=None, help=f"default {value}")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tpo-data", description="Synthetic grounding clips with ground truth.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pm = sub.add_parser("make", help="write videos and annotations (COCO, QVHighlights, queries)")
    pm.add_argument("--out", required=True, help="output folder (new or empty)")
    pm.add_argument("--clips", type=int, required=True)
    pm.add_argument("--seed", type=int, required=True)
    pm.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    pm.add_argument("--json", action="store_true", help="print meta.json instead of a summary")
    _add_config_flags(pm)
    pi = sub.add_parser("info", help="summarise a dataset folder (reads meta.json)")
    pi.add_argument("dir")
    pi.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.cmd == "make":
            from .data import make_dataset

            meta = make_dataset(out_dir=args.out, clips=args.clips, seed=args.seed, config=_config_from_args(args),
                                overwrite=args.overwrite, progress=not args.json)
        else:
            from .data import read_meta

            meta = read_meta(args.dir)
        print(json.dumps(meta, indent=2)) if args.json else print_meta(meta)
    except TPOError as e:
        print(f"tpo-data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
