"""tpo.runtime: exported graphs on numpy, OpenCV and an inference engine (never torch).

    import tpo.runtime
    session = tpo.runtime.open("artifacts/tiny-fp16")                 # checks every sha256, loads the graphs
    answer = session.ask("track the red circle", frames, fps=30.0)    # frames [N, H, W, 3] uint8 RGB
    for result in session.stream("clip.mp4", "track the red circle"):
        result.objects, result.events

Importing this package loads nothing heavy; `open` imports the session and the engine.
"""

from __future__ import annotations

from pathlib import Path


def open(artifacts: str | Path, backend: str = "onnxruntime", verify: bool = True, **backend_args):  # noqa: A001
    """Load an artifacts folder (a `tpo-export` output) on `backend`: see `tpo.runtime.session.open`."""
    from .session import open as open_session

    return open_session(artifacts, backend=backend, verify=verify, **backend_args)


__all__ = ["open"]
