"""tpo-kernels: build the CUDA kernels ahead of time, or say which kernel path this machine takes.

Usage:
    tpo-kernels build --arch sm_87,sm_90 [--out DIR]    one line per kernel x arch with the cubin size
    tpo-kernels path                                     "kernel path: gpu (...)" or "kernel path: cpu (...)"
"""

from __future__ import annotations

import argparse
import sys

from tpo.errors import TPOError, one_line_errors
from tpo.kernels.nvrtc import DEFAULT_ARCHS, build_cubins, cache_dir, parse_archs
from tpo.kernels.path import available


@one_line_errors("tpo-kernels")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tpo-kernels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="compile every kernel with NVRTC for the given architectures")
    build.add_argument("--arch", default=",".join(DEFAULT_ARCHS), help="comma-separated, e.g. sm_87,sm_90")
    build.add_argument(
        "--out", default=None, help=f"directory for the cubins (default: the cache, {cache_dir()})"
    )
    path = commands.add_parser("path", help="say whether the GPU kernels can run here, and why")
    path.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            for built in build_cubins(parse_archs(args.arch), args.out):
                print(f"{built.kernel.name:<18} {built.arch:<7} {built.nbytes:>9,} bytes  {built.path}")
                for line in built.log.splitlines():
                    print(f"  nvrtc: {line}")
        else:
            print(available(args.device))
    except TPOError as e:
        print(f"tpo-kernels: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
