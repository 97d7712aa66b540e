"""A live HTTP MJPEG source against a real local server that stalls and dies: the read watchdog, reconnects,
events and the frame accounting."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest

from tpo.runtime.sources import ReconnectPolicy, open_source


class MjpegServer:
    """multipart/x-mixed-replace JPEG frames on 127.0.0.1 at `fps`; `stall()` stops sending while keeping the
    socket open (until `resume()`), `stop()` closes the server and every connection."""

    def __init__(self, fps: float = 25.0):
        server = self
        self.sent = 0
        self.stalled = threading.Event()
        self.alive = threading.Event()
        self.alive.set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while server.alive.is_set():
                        if server.stalled.is_set():
                            time.sleep(0.02)
                            continue
                        img = np.full((48, 64, 3), (server.sent * 7) % 255, np.uint8)
                        jpg = cv2.imencode(".jpg", img)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        self.wfile.flush()
                        server.sent += 1
                        time.sleep(1.0 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.tcp.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.tcp.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.tcp.serve_forever, daemon=True).start()

    def stall(self):
        self.stalled.set()

    def resume(self):
        self.stalled.clear()

    def stop(self):
        self.alive.clear()
        self.tcp.shutdown()
        self.tcp.server_close()


@pytest.fixture
def server():
    s = MjpegServer()
    yield s
    if s.alive.is_set():
        s.stop()


def _read_until(source, predicate, timeout_s: float):
    """Frames from `source` until predicate(frames, events) holds or the time is up."""
    frames, start = [], time.monotonic()
    while time.monotonic() - start < timeout_s:
        frame = next(source, None)
        if frame is None:
            break
        frames.append(frame)
        if predicate(frames, source.events):
            break
    return frames


def test_a_stalled_stream_is_noticed_by_the_watchdog_and_reconnected(server):
    watchdog = 1.0
    source = open_source(server.url, watchdog_s=watchdog, reconnect=ReconnectPolicy(attempts=4, initial_s=0.2))
    assert source.live
    before = _read_until(source, lambda f, e: len(f) >= 10, 10.0)
    assert len(before) >= 10
    server.stall()
    stalled_at = time.monotonic()
    threading.Timer(watchdog + 1.0, server.resume).start()       # the server sends again after the watchdog fired
    after = _read_until(source, lambda f, e: len(f) >= 10, 15.0)
    kinds = [e["event"] for e in source.events]
    assert "stalled" in kinds, kinds
    stall_event = next(e for e in source.events if e["event"] == "stalled")
    assert "nothing read for 1 s" in stall_event["detail"]
    assert len(after) >= 10, kinds
    assert after[0].index > before[-1].index, "frame indices keep growing across the restart"
    assert time.monotonic() - stalled_at < watchdog + 12.0
    source.close()
    stats = source.stats
    assert stats.frames_in == stats.delivered + stats.dropped and stats.reconnects >= 1


def test_a_server_that_dies_gives_reconnect_attempts_then_ends(server):
    source = open_source(server.url, watchdog_s=1.0, reconnect=ReconnectPolicy(attempts=2, initial_s=0.1, max_s=0.2))
    assert len(_read_until(source, lambda f, e: len(f) >= 5, 10.0)) >= 5
    server.stop()
    start = time.monotonic()
    rest = _read_until(source, lambda f, e: False, 30.0)
    assert time.monotonic() - start < 30.0 and source.closed, "the source ends after its reconnect attempts"
    kinds = [e["event"] for e in source.events]
    assert "gave_up" in kinds and kinds.count("reconnect_attempt") >= 2, kinds
    assert "disconnected" in kinds or "stalled" in kinds, kinds
    stats = source.stats
    assert stats.frames_in == stats.delivered + stats.dropped
    assert len(rest) < 100
