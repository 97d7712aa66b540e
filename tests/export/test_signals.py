"""Ctrl-C and SIGTERM during tpo-export: a flag read at stop points (export/stop.py), one line, nothing at --out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tpo.signals import EXIT_SIGINT, EXIT_SIGTERM, StopOnSignal, StopRequested, stop_point


def test_first_signal_is_a_request_the_second_sigint_interrupts():
    before = signal.getsignal(signal.SIGINT)       # Python's handler, or SIG_IGN under a background job / nohup
    stop_point()                                   # nothing installed, nothing requested: no effect
    with StopOnSignal():
        stop_point()
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(StopRequested) as e:
            stop_point()
        assert (e.value.reason, e.value.exit_code) == ("terminated (SIGTERM)", EXIT_SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)                        # the handler runs between bytecodes
    stop_point()                                   # leaving the block clears the request
    assert signal.getsignal(signal.SIGINT) is before                   # and puts the handler back


@pytest.mark.parametrize("sig, code, reason", [(signal.SIGINT, EXIT_SIGINT, "interrupted (SIGINT)"),
                                               (signal.SIGTERM, EXIT_SIGTERM, "terminated (SIGTERM)")])
def test_a_signal_to_a_running_export_stops_it_cleanly(tmp_path, sig, code, reason):
    out = tmp_path / "o"
    env = dict(os.environ, TPO_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tpo.export.cli", "--precision", "fp32", "--out", str(out),
                             "--no-progress", "--stream", "on"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not any(tmp_path.glob(".o.partial-*/*.onnx")):          # mid-export: a graph is written
            assert proc.poll() is None and time.monotonic() < deadline, "the export ended before it was signalled"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.startswith("tpo-export:")]
    assert proc.returncode == code, err
    assert lines == [f"tpo-export: {reason}; nothing written to {out}"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
