"""Free-run pacing of the synthetic and replay cameras: a fixed grid of exposures, and no burst after a stall."""

from __future__ import annotations

import time

from inspectd.camera.pacing import Pacer


def test_a_late_caller_gets_one_frame_then_waits_for_the_grid() -> None:
    """After a stall (a warm-up, a slow part) one frame comes at once and the frames missed meanwhile are dropped,
    as a camera's newest-only buffering drops them: before, three came back to back and overflowed the first
    queue at start-up."""
    p = Pacer(0.5)  # a 2 s grid: nothing on this machine stalls between two calls for that long
    p._next -= 10.25  # five grid points and a bit behind, as after a long warm-up
    grid = p._next
    assert p.wait(0.0)
    assert not p.wait(0.0)  # the next exposure is on the grid, not a catch-up
    assert 0 < p._next - time.monotonic() <= 2.0
    steps = (p._next - grid) / 2.0
    assert abs(steps - round(steps)) < 1e-6  # same phase as before the stall


def test_an_on_time_caller_keeps_the_rate() -> None:
    p = Pacer(0.5)
    start = p._next
    assert p.wait(0.0)  # due at construction
    assert p._next == start + 2.0
    assert not p.wait(0.0)
