"""CaptureGate: a CUDA graph capture and per-part GPU work never overlap (threads and events, no GPU needed)."""

from __future__ import annotations

import threading

from inspectd.cuda_context import CaptureGate

WAIT = 10.0  # generous bound for a thread to reach its next step on a loaded machine


def _thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_work_runs_alongside_other_work() -> None:
    gate = CaptureGate()
    inside = threading.Barrier(2, timeout=WAIT)

    def worker() -> None:
        with gate.work():
            inside.wait()  # both are inside at once, or the barrier breaks

    a, b = _thread(worker), _thread(worker)
    a.join(WAIT)
    b.join(WAIT)
    assert not inside.broken and not a.is_alive() and not b.is_alive()


def test_capture_waits_for_work_in_flight_and_holds_new_work_back() -> None:
    gate = CaptureGate()
    log: list[str] = []
    working, release_work = threading.Event(), threading.Event()
    capturing, release_capture = threading.Event(), threading.Event()

    def part_in_flight() -> None:
        with gate.work():
            working.set()
            release_work.wait(WAIT)
            log.append("work 1 done")

    def reload_capture() -> None:
        with gate.capture():
            log.append("capture")
            capturing.set()
            release_capture.wait(WAIT)
            log.append("capture done")

    def next_part() -> None:
        with gate.work():
            log.append("work 2")

    w1 = _thread(part_in_flight)
    assert working.wait(WAIT)
    cap = _thread(reload_capture)
    assert not capturing.wait(0.2)  # the capture waits for the part in flight
    w2 = _thread(next_part)  # arrives while the capture waits: must not start before it
    w2.join(0.2)
    assert w2.is_alive()
    release_work.set()
    assert capturing.wait(WAIT)
    assert w2.is_alive()  # held back for the whole capture
    release_capture.set()
    for t in (w1, cap, w2):
        t.join(WAIT)
        assert not t.is_alive()
    assert log == ["work 1 done", "capture", "capture done", "work 2"]


def test_a_failed_capture_lets_work_go_on() -> None:
    gate = CaptureGate()
    try:
        with gate.capture():
            raise RuntimeError("capture failed")
    except RuntimeError:
        pass
    done = threading.Event()

    def worker() -> None:
        with gate.work():
            done.set()

    _thread(worker)
    assert done.wait(WAIT)


def test_each_threads_graph_runs_after_its_first_hold_the_gate_alone() -> None:
    """ONNX Runtime captures a CUDA graph per calling thread on that thread's second run: the device runner holds
    the gate exclusively for each thread's 2nd and 3rd runs, shared for its 1st and every later one; without a
    graph, always shared. (The runner's GPU part is replaced by a probe of the gate's state.)"""
    from inspectd.cuda_context import CAPTURES
    from inspectd.infer.ort_device import CAPTURE_RUNS, DeviceRunner

    def runner(graph: bool) -> tuple[DeviceRunner, list[bool]]:
        r = DeviceRunner.__new__(DeviceRunner)  # no session: only run()'s gate choice is under test
        r._graph, r._thread_runs, r.captured_on = graph, threading.local(), []
        seen: list[bool] = []
        r._run = lambda tensor: seen.append(CAPTURES._capturing) or {}  # type: ignore[method-assign]
        return r, seen

    graphed, seen = runner(True)
    for _ in range(5):
        graphed.run(None)  # type: ignore[arg-type]
    assert CAPTURE_RUNS == 3 and seen == [False, True, True, False, False]
    t = _thread(lambda: [graphed.run(None) for _ in range(4)])  # type: ignore[arg-type]
    t.join(WAIT)
    assert seen[5:] == [False, True, True, False]  # a new thread captures its own
    assert graphed.captured_on == ["MainThread", t.name]
    plain, seen_plain = runner(False)
    for _ in range(3):
        plain.run(None)  # type: ignore[arg-type]
    assert seen_plain == [False, False, False]
