"""Peak resident memory and wall time per phase of an export (per graph), for the manifest and the docs.

`getrusage` gives only the process's peak so far; a phase's own peak needs samples. A daemon thread reads
/proc/self/statm every `interval` seconds (torch and onnxruntime release the GIL in their kernels, so the
thread keeps sampling through them) and keeps the maximum of the phase in progress. A spike shorter than the
interval can be missed; the process's true peak is `ru_maxrss`, reported beside.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator

from tpo.signals import stop_point

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def max_rss_bytes() -> int:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssMonitor:
    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.phases: dict[str, dict[str, float]] = {}
        self._current: str | None = None
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_bytes())

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time `name` and record the largest resident set seen while it ran (a stop point first: tpo/signals.py)."""
        stop_point()
        self._peak = rss_bytes()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._peak = max(self._peak, rss_bytes())
            self.phases[name] = {"seconds": round(time.perf_counter() - start, 2),
                                 "peak_rss_mb": round(self._peak / 2**20, 1)}

    def report(self) -> dict:
        return {"phases": dict(self.phases), "process_peak_rss_mb": round(max_rss_bytes() / 2**20, 1),
                "sampling_interval_s": self.interval}
