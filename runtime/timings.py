"""Per-stage latency of a stream in bounded memory: percentiles exact to 1%, whatever the stream's length.

A camera stream runs for weeks; keeping every sample (about 400 bytes per frame over all stages) would
grow by a gigabyte a day at 30 fps. Each stage keeps a histogram of log-spaced buckets instead (ratio
1.01 between bucket edges, so a percentile read off a bucket is within 1% of the true sample), plus the
exact count, sum, minimum and maximum. A histogram of 1 µs .. 1000 s holds at most ~2,100 buckets, and a
stage whose times stay within a factor of two uses ~70.

`Timings.frame()` also collects the stages of the current frame (the per-frame timings a `FrameResult`
carries), reset by the stream at each frame.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager

RATIO = 1.01
_LOG_RATIO = math.log(RATIO)
_FLOOR_S = 1e-7   # shorter times fall into the first bucket


class StageHistogram:
    """Counts of durations in log buckets: bucket k holds [FLOOR * RATIO**k, FLOOR * RATIO**(k+1))."""

    __slots__ = ("buckets", "count", "total", "low", "high")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = 0.0

    def add(self, seconds: float) -> None:
        k = int(math.log(max(seconds, _FLOOR_S) / _FLOOR_S) / _LOG_RATIO)
        self.buckets[k] = self.buckets.get(k, 0) + 1
        self.count += 1
        self.total += seconds
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)

    def merge(self, other: StageHistogram) -> None:
        """Add `other`'s samples (the same buckets, so percentiles stay exact to 1%)."""
        for k, n in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + n
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in seconds: the geometric middle of the bucket that holds it,
        clamped to the exact min and max (so p0 and p100 are exact)."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen >= rank:
                middle = _FLOOR_S * RATIO ** (k + 0.5)
                return min(max(middle, self.low), self.high)
        return self.high

    def summary_ms(self) -> dict[str, float]:
        ms = 1000.0
        return {"count": self.count, "mean": round(self.total / self.count * ms, 3),
                **{f"p{q}": round(self.percentile(q) * ms, 3) for q in (50, 95, 99)},
                "max": round(self.high * ms, 3)}


class Timings:
    """Seconds per stage of one stream (or one direct API user of a session). Thread-safe."""

    def __init__(self) -> None:
        self.stages: dict[str, StageHistogram] = {}
        self._frame: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            hist = self.stages.get(stage)
            if hist is None:
                hist = self.stages[stage] = StageHistogram()
            hist.add(seconds)
            self._frame[stage] = self._frame.get(stage, 0.0) + seconds

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def frame(self) -> dict[str, float]:
        """Milliseconds per stage since the last call (the current frame's stages), and reset."""
        with self._lock:
            out = {k: round(v * 1000.0, 3) for k, v in self._frame.items()}
            self._frame = {}
        return out

    def total_s(self, stage: str) -> float:
        hist = self.stages.get(stage)
        return hist.total if hist else 0.0

    def count(self, stage: str) -> int:
        hist = self.stages.get(stage)
        return hist.count if hist else 0

    def summary_ms(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {stage: hist.summary_ms() for stage, hist in self.stages.items()}

    def merged(self, *others: Timings) -> Timings:
        """A new Timings holding this one's samples and the others' (a stream's fast path and its slow path's
        thread each keep their own, so neither's per-frame stages see the other; the summary shows both)."""
        out = Timings()
        for timings in (self, *others):
            with timings._lock:
                for stage, hist in timings.stages.items():
                    out.stages.setdefault(stage, StageHistogram()).merge(hist)
        return out
