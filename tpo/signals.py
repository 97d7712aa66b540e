"""Ctrl-C and SIGTERM during a long batch job (`tpo-export`, `tpo-calibrate`): a flag set by the signal, read at
safe points between steps.

A KeyboardInterrupt raised wherever the signal lands can end up inside torch's exporter, which tries several
capture strategies in turn and may treat the interruption as one strategy failing; one real SIGINT to a
running export did not end it within 120 s. So the CLI installs `StopOnSignal`: the first SIGINT or SIGTERM
only records the request, and the export raises `StopRequested` at its next `stop_point()` (before each graph
and each phase, between initializers, between gate samples: seconds apart at tiny size, at most one graph's
trace at full size). A second SIGINT raises KeyboardInterrupt at once. Library callers that install nothing
keep Python's default behaviour.
"""

from __future__ import annotations

import signal

EXIT_SIGINT, EXIT_SIGTERM = 130, 143
_REASONS = {signal.SIGINT: ("interrupted (SIGINT)", EXIT_SIGINT),
            signal.SIGTERM: ("terminated (SIGTERM)", EXIT_SIGTERM)}


class StopRequested(KeyboardInterrupt):
    """Raised at a stop point after a signal; `reason` and `exit_code` say which."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason, self.exit_code = reason, exit_code


_requested: tuple[str, int] | None = None


def stop_point() -> None:
    """Raise `StopRequested` if a signal asked the export to stop."""
    if _requested is not None:
        raise StopRequested(*_requested)


class StopOnSignal:
    """Context manager: SIGINT/SIGTERM set the request flag (a second SIGINT interrupts at once)."""

    def __call__(self, signum, frame) -> None:
        global _requested
        if _requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        _requested = _REASONS[signal.Signals(signum)]

    def __enter__(self) -> StopOnSignal:
        global _requested
        _requested = None
        self._previous = {sig: signal.signal(sig, self) for sig in _REASONS}
        return self

    def __exit__(self, *exc) -> None:
        global _requested
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        _requested = None
