"""The stage threads: acquire -> preprocess -> infer -> decide.

Each stage takes a Part from its input queue, skips it if its verdict was already
issued (deadline passed: no point spending the cycle on it), does its work, and
hands the Part on. An exception in a stage settles that part as fail-safe
`stage_error` and the stage carries on with the next part.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np
import structlog

from inspectd.camera.base import Source
from inspectd.decide import decide
from inspectd.pipeline.handoff import Handoff, Slots
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.pipeline.stamps import StageStamp
from inspectd.pipeline.verdicts import VerdictBus
from inspectd.postprocess import BadOutput
from inspectd.types import Frame, Part, Reason, Trigger

log = structlog.get_logger("inspectd.pipeline")

STOP = None  # sentinel passed down the queues on shutdown
POLL_S = 0.1  # how often an idle stage looks up (and beats its stamp)

R = TypeVar("R")


class Chore(Generic[R]):
    """Work for a stage's own thread, queued like a part (so it runs between two parts, in order) while its caller
    waits: warming a runtime's model on the inference thread itself, because ONNX Runtime's CUDA provider keeps
    its cuBLAS/cuDNN handles and CUDA graph per calling thread."""

    def __init__(self, fn: Callable[[], R]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self._result: R | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as e:  # handed to the waiting caller; the stage thread carries on
            self._error = e
        finally:
            self._done.set()

    def wait(self, timeout: float) -> R:
        if not self._done.wait(timeout):
            raise TimeoutError(f"a stage thread did not run its chore within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set whenever no error was


class Stage(threading.Thread):
    """A worker thread between two bounded queues."""

    def __init__(self, inq: Handoff[Part | Chore | None], outq: Handoff[Part | Chore | None] | None,
                 bus: VerdictBus, stamp: StageStamp) -> None:
        super().__init__(name=stamp.name, daemon=True)
        self.inq, self.outq, self.bus, self.stamp = inq, outq, bus, stamp
        self.errors = 0  # parts this stage raised on (logged with their traceback at powers of two)
        self.ends_parts = False  # its work settles each part (the outq then carries only the STOP)

    def work(self, part: Part) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called when no part arrived for POLL_S."""

    def call(self, fn: Callable[[], R], timeout: float) -> R:
        """Run `fn` on this stage's thread, after the parts queued before it, and return what it returned (or raise
        what it raised). The thread must be running."""
        chore = Chore(fn)
        try:
            self.inq.put(chore, timeout=timeout)
        except queue.Full:
            raise TimeoutError(f"stage {self.stamp.name}: no room in its queue within {timeout:g} s") from None
        return chore.wait(timeout)

    def run(self) -> None:
        self.stamp.thread_id = threading.get_ident()
        while True:
            try:
                part = self.inq.get(timeout=POLL_S)
            except queue.Empty:
                self.stamp.idle_beat()
                self.idle()
                continue
            if part is STOP:
                if self.outq is not None:
                    self.outq.put(STOP)
                return
            if isinstance(part, Chore):
                part.run()
                self.stamp.idle_beat()
                continue
            rt = part_runtime(part)
            # Hold the runtime before looking at `settled`: a reload closes a retired runtime only once none of
            # its parts is open and no stage holds it, so a part seen open here keeps its runtime alive.
            if not rt.hold():
                self.bus.fail(part, Reason.STAGE_ERROR)  # closed: its parts were all settled; this is a no-op
                continue
            try:
                if part.settled:  # fail-safe already issued; don't spend the cycle on it
                    continue
                t0 = self.stamp.begin(part.seq)
                try:
                    self.work(part)
                except Exception:
                    self.bus.stats.stage_errors += 1
                    self.errors += 1
                    if self.errors & (self.errors - 1) == 0:  # 1st, 2nd, 4th, 8th...: a failing model must not
                        # flood the log (and crowd out the lines that matter); every one is counted in metrics
                        log.exception("stage_error", stage=self.stamp.name, seq=part.seq, part_id=part.part_id,
                                      count=self.errors)
                    self.bus.fail(part, Reason.STAGE_ERROR, rt.backend.model_sha256)
                    self.stamp.end()
                    continue
            finally:
                rt.release()
            end = self.stamp.end()
            part.stage_t.setdefault(self.stamp.name, (t0, end))  # an inline decide recorded the model's own
            if self.outq is None or self.ends_parts:
                continue
            if part.settled:  # its fail-safe went out while we worked: the late result is dropped
                self.bus.stats.late_results += 1
                continue
            self.outq.put(part)  # blocking: backpressure goes up to the acquire stage's overflow policy


def part_runtime(part: Part) -> ProductRuntime:
    return part.runtime  # types.py sits below pipeline: Part.runtime is Any


class PreprocessStage(Stage):
    def work(self, part: Part) -> None:
        assert part.frame is not None
        part.tensor = part_runtime(part).preprocess(part.frame)


class InferStage(Stage):
    def __init__(self, *args, keep_warm_s: float | None, active: Callable[[], ProductRuntime],
                 no_parts: Callable[[], bool], decide: Callable[[Part], None] | None = None,
                 **kw) -> None:
        """`no_parts`: true while no part is inside the pipeline (keep-warm waits for that). `decide`: run on this
        thread right after the model (pipeline.decide_thread false), settling the part."""
        super().__init__(*args, **kw)
        self.keep_warm_s = keep_warm_s
        self.active = active
        self.no_parts = no_parts
        self.decide = decide
        self.ends_parts = decide is not None
        self.last_infer = time.monotonic()
        self.warmups = 0  # keep-warm's dummy inferences run, and those that raised (metrics)
        self.warmup_failures = 0

    def work(self, part: Part) -> None:
        assert part.tensor is not None
        part.outputs = part_runtime(part).backend.infer(part.tensor)
        self.last_infer = time.monotonic()
        if self.decide is not None:  # the model's time apart from the decision's, as in two stages
            part.stage_t[self.stamp.name] = (self.stamp.busy_since or self.last_infer, self.last_infer)
            self.decide(part)

    def idle(self) -> None:
        # Keep-warm: a dummy inference after a pause, so the next real part does not pay a cold start.
        if self.keep_warm_s is None or time.monotonic() - self.last_infer < self.keep_warm_s:
            return
        if not self.no_parts():  # a part on its way (exposure, transfer, preprocessing) must not wait behind a dummy
            return
        rt = self.active()
        if not rt.hold():
            return
        try:
            spec = rt.product.model.input
            dummy = np.zeros((1, spec.channels, spec.height, spec.width), np.dtype(spec.dtype))
            rt.backend.infer(dummy)
            self.warmups += 1
        except Exception:  # keep-warm is an optimisation: it must never take the inference thread down
            self.warmup_failures += 1
            log.exception("keep_warm_failed", product=rt.name)
        finally:
            rt.release()
            self.last_infer = time.monotonic()


class DecideStage(Stage):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.bad_outputs = 0

    def work(self, part: Part) -> None:
        began = self.stamp.busy_since or time.monotonic()  # not busy: run inline by the inference stage
        rt = part_runtime(part)
        assert part.outputs is not None
        try:
            part.findings = rt.postprocess(part.outputs)
        except BadOutput as e:  # NaN, inf, wrong size: fail-safe `bad_output`, never a pass
            self._bad_output(part, rt, str(e))
            self.bus.fail(part, Reason.BAD_OUTPUT, rt.backend.model_sha256)
            return
        decision = decide(part.findings, rt.product)
        if decision.reason == Reason.BAD_OUTPUT.value:
            self._bad_output(part, rt, "a rule's score is missing or not finite")
        part.stage_t["decide"] = (began, time.monotonic())
        self.bus.settle(part, decision, rt.backend.model_sha256)

    def _bad_output(self, part: Part, rt: ProductRuntime, problem: str) -> None:
        self.bad_outputs += 1
        if self.bad_outputs & (self.bad_outputs - 1) == 0:  # 1st, 2nd, 4th, 8th...: a broken model must not flood
            log.error("bad_output", seq=part.seq, part_id=part.part_id, product=rt.name, problem=problem,
                      model_sha256=rt.backend.model_sha256, count=self.bad_outputs)


class AcquireStage(threading.Thread):
    """Turns triggers into parts: grabs the frame, starts the part's deadline, applies the overflow policy."""

    def __init__(self, *, source: Source, outq: Handoff, bus: VerdictBus, stamp: StageStamp,
                 new_part: Callable[[float, int | None], Part],
                 triggers: Callable[[float], Trigger | None] | None, overflow: str, grab_timeout: float,
                 slots: Slots | None = None, fire: bool = True,
                 pace: Callable[[], float] | None = None, admitted: Callable[[], None] | None = None,
                 before_part: Callable[[], None] | None = None, waits: bool = False) -> None:
        """`new_part` registers the part in verdict order and with the deadline keeper. `admitted`: called once
        each trigger has become a part (its reservation, see Admission, is used up). `before_part`: the one hook
        between two parts (a product switch lands there), run on this thread before each free-run grab, or after
        each trigger poll, so what it changes judges the part taken next. `waits`: the free-run source can
        wait (a replay without rate_hz): its frame is taken only once the first queue has room."""
        super().__init__(name="acquire", daemon=True)
        self.source, self.outq, self.bus, self.stamp = source, outq, bus, stamp
        self.new_part, self.triggers, self.admitted = new_part, triggers, admitted
        self.before_part = before_part
        self.waits = waits
        self.overflow, self.grab_timeout = overflow, grab_timeout
        self.slots = slots  # in-flight limit (admission control); released when the part's verdict is issued
        self.fire = fire  # False with a hardware trigger: the line fires the camera, we only pair the frame
        self.pace = pace  # seconds to hold the next admission so it meets a free stage, not a queue
        self.stopping = threading.Event()
        self.draining = threading.Event()  # stop once no trigger is waiting (every accepted trigger is a part)
        self.max_parts: int | None = None

    def run(self) -> None:
        self.stamp.thread_id = threading.get_ident()
        try:
            while not self.stopping.is_set():
                if self.max_parts is not None and self.bus.stats.parts_in >= self.max_parts:
                    self.stamp.idle_beat()
                    self.stopping.wait(POLL_S)
                    continue
                if not self._one() and self.draining.is_set():
                    return
        finally:
            self.outq.put(STOP)

    def _one(self) -> bool:
        """Admit at most one part; True if one was (or could have been: pacing) admitted."""
        draining = self.draining.is_set()
        if self.pace is not None and not draining and (delay := self.pace()) > 0:
            time.sleep(min(delay, POLL_S))
            self.stamp.idle_beat()
            return True
        if self.slots is not None and not self.slots.acquire(timeout=POLL_S):
            self.stamp.idle_beat()
            return True
        admitted = False
        try:
            admitted = self._admit(0.0 if draining else POLL_S)
        finally:
            if self.slots is not None and not admitted:
                self.slots.release()
        return admitted

    def _admit(self, poll: float = POLL_S) -> bool:
        """Start at most one part; False if none started (the in-flight slot is then given back)."""
        if self.triggers is None:  # free-run: every frame is a part
            if self.draining.is_set():
                return False  # free-run: nothing is owed to anyone, stop at once
            if self.waits and self.outq.full():  # the next stage is busy: hold the frame back, do not overrun
                time.sleep(0.001)
                self.stamp.idle_beat()
                return False
            if self.before_part is not None:
                self.before_part()
            t_grab0 = time.monotonic()
            frame = self.source.grab(POLL_S)
            if frame is None:
                self.stamp.idle_beat()
                return False
            part = self.new_part(frame.t_grab, None)  # free-run: the part starts when its frame arrives
            self._start(part, t_grab0, frame)
            return True
        trig = self.triggers(poll)  # triggered: a trigger starts the part, the frame must follow within its window
        if self.before_part is not None:
            self.before_part()  # after the poll: what it switches judges the trigger returned now
        if trig is None:
            self.stamp.idle_beat()
            return False
        try:
            part = self.new_part(trig.t_trigger, trig.part_id)
            t_grab0 = time.monotonic()
            frame = None
            try:
                if self.fire:
                    self.source.fire()
                frame = self.source.grab(min(self.grab_timeout, max(part.time_left(), 0.0)))
            except Exception:  # the part is registered: it gets its verdict here rather than at its deadline
                log.exception("grab_failed", part_id=part.part_id)
            self._start(part, t_grab0, frame)
        finally:
            if self.admitted is not None:
                self.admitted()
        return True

    def _start(self, part: Part, t_grab0: float, frame: Frame | None) -> None:
        self.bus.stats.parts_in += 1
        self.stamp.begin(part.seq)
        if frame is None:
            self.bus.fail(part, Reason.NO_FRAME if self.source.connected else Reason.CAMERA_LOST)
        else:
            part.frame = frame
            part.stage_t["grab"] = (t_grab0, frame.t_grab)
            self._hand_on(part)
        self.stamp.end()

    def _hand_on(self, part: Part) -> None:
        try:
            if self.overflow == "block":  # wait for room, but not past the part's deadline
                self.outq.put(part, timeout=max(part.time_left(), 0.0))
            else:
                self.outq.put_nowait(part)
            return
        except queue.Full:
            pass
        if self.overflow == "failsafe_oldest":
            try:
                oldest = self.outq.get_nowait()
                self._overflowed(oldest)
                self.outq.put_nowait(part)
                return
            except (queue.Empty, queue.Full):
                pass  # the consumer took it meanwhile, or the queue refilled: fall through
        self._overflowed(part)

    def _overflowed(self, part: Part) -> None:
        self.bus.stats.overflows += 1
        self.bus.fail(part, Reason.OVERFLOW)
