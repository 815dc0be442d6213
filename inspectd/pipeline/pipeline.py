"""Wiring: source -> acquire -> preprocess -> infer -> decide, with the deadline keeper beside them."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable, Sequence

import structlog

from inspectd.camera.base import Finite, Source
from inspectd.config.schema import StationConfig
from inspectd.pipeline.admission import Admission
from inspectd.pipeline.handoff import Handoff, Slots
from inspectd.pipeline.health import FaultMonitor
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.pipeline.stages import STOP, AcquireStage, Chore, DecideStage, InferStage, PreprocessStage
from inspectd.pipeline.stamps import StageStamp
from inspectd.pipeline.stats import PipelineStats
from inspectd.pipeline.verdicts import DeadlineKeeper, VerdictBus, VerdictSink
from inspectd.pipeline.warmup import warm_up
from inspectd.timing import CycleTiming
from inspectd.types import STAGE_THREADS, Frame, Part, Reason, Trigger

log = structlog.get_logger("inspectd.pipeline")

STAGES = STAGE_THREADS
WARM_TIMEOUT_S = 120.0  # one warm-up run on the inference thread: a first CUDA graph capture, cuDNN's search


class Pipeline:
    def __init__(
        self,
        station: StationConfig,
        source: Source,
        runtime: ProductRuntime,
        *,
        sinks: list[VerdictSink] | None = None,
        triggers: Callable[[float], Trigger | None] | None = None,
        reserved_triggers: bool = False,
        before_part: Callable[[], None] | None = None,
    ) -> None:
        """`reserved_triggers`: every trigger was announced by `admission.reserve()` (a PLC that obeys READY);
        the acquire stage then neither paces nor waits for a slot: the reservation holds them. `before_part`:
        run on the acquire thread between parts (see AcquireStage)."""
        self.station = station
        self.source = source
        self.stats = PipelineStats()
        self.bus = VerdictBus(self.stats)
        self.faults = FaultMonitor(source)
        self.bus.sinks.extend([self.faults, *(sinks or [])])
        self.keeper = DeadlineKeeper(self.bus)
        self.stamps = {name: StageStamp(name) for name in STAGES}
        self._active = runtime
        self._seq = itertools.count(1)
        self.on_accept: Callable[[Part], None] | None = None  # e.g. the journal's ahead record, before anything else
        self._order_lock = threading.Lock()
        self.timing = CycleTiming.of(station)
        depth = station.pipeline.queue_depth
        limit = station.pipeline.max_in_flight
        self.slots = Slots(limit) if limit else None
        self._slot_parts: set[int] = set()  # id() of parts holding an in-flight slot (refused ones hold none)
        if self.slots is not None:
            self.bus.on_settled = self._release_slot
        q_pre: Handoff[Part | Chore | None] = Handoff(depth)
        q_inf: Handoff[Part | Chore | None] = Handoff(depth)
        q_dec: Handoff[Part | Chore | None] = Handoff(depth)
        self.queues = {"preprocess": q_pre, "infer": q_inf, "decide": q_dec}
        # PipelineConfig.parts_inside counts these queues and the four stage threads: keep them in step
        assert len(self.queues) * depth + 4 == station.pipeline.parts_inside
        self.admission = Admission(q_pre, self.slots, self.expected_latency_s, self.timing.deadline_s)
        # A free-run source that can wait (a replay without rate_hz) is paced like a limited one: it is admitted
        # when the stages can take it, never overrun into `overflow` fail-safes.
        waits = triggers is None and self.slots is None and isinstance(source, Finite) and source.can_wait
        own_pace = (self.slots is not None or waits) and not reserved_triggers
        self.acquire = AcquireStage(
            source=source, outq=q_pre, bus=self.bus, stamp=self.stamps["acquire"], new_part=self._new_part,
            triggers=triggers, overflow=station.pipeline.overflow,
            grab_timeout=self.timing.grab_timeout_s, slots=self.slots if own_pace else None,
            fire=station.trigger.source != "hardware", pace=self.admission_delay if own_pace else None,
            admitted=self.admission.admitted if reserved_triggers else None, before_part=before_part,
            waits=waits)
        decider = DecideStage(q_dec, None, self.bus, self.stamps["decide"])  # idles when decide is inline
        self.infer = InferStage(q_inf, q_dec, self.bus, self.stamps["infer"],
                                keep_warm_s=station.watchdog.keep_warm_s, active=lambda: self._active,
                                no_parts=lambda: self.idle,
                                decide=None if station.pipeline.decide_thread else decider.work)
        self.workers = [PreprocessStage(q_pre, q_inf, self.bus, self.stamps["preprocess"]), self.infer, decider]
        self._started = False

    # -- parts ----------------------------------------------------------------------------------
    def _new_part(self, t_trigger: float, part_id: int | None, admitted: bool = True) -> Part:
        """A part in trigger order: it takes its place in the verdict order and, if `admitted` into the
        pipeline, is watched by the deadline keeper from now on (whatever happens to it next, it settles)."""
        with self._order_lock:  # seq order == delivery order, also with the PLC thread refusing triggers
            seq = next(self._seq)
            rt = self._active  # read once: the part keeps this runtime even if the product switches now
            part = Part(seq, Trigger(seq if part_id is None else part_id, t_trigger), rt.name,
                        deadline=t_trigger + self.timing.deadline_s)
            part.runtime = rt
            self.bus.register(part)
        if admitted:
            if self.slots is not None:
                self._slot_parts.add(id(part))
            self.keeper.watch(part)
        if self.on_accept is not None:  # after watch: should it raise, the part still settles by its deadline
            self.on_accept(part)
        return part

    def _release_slot(self, part: Part) -> None:
        if self.slots is not None and id(part) in self._slot_parts:
            self._slot_parts.discard(id(part))
            self.slots.release()

    def expected_latency_s(self, extra_ahead: int = 0) -> tuple[float, int]:
        """(trigger-to-verdict seconds, parts ahead) for a part triggered now, behind the parts in flight and
        `extra_ahead` triggers that are accepted but not yet parts. From the stages' typical times."""
        typical = [self.stamps[n].typical_s for n in STAGES]
        wait = max(0.0, self.admission_delay() + self.timing.admission_lead_s)  # until every stage is free for it
        return sum(typical) + wait + extra_ahead * max(typical), self.keeper.open_parts + extra_ahead

    def admission_delay(self) -> float:
        """How long a source that can wait should hold its next part so that it reaches every stage as
        that stage frees up, instead of waiting in a queue (latency = sum of the stages at full rate).
        From each stage's typical time, what it is busy with, and the parts ahead of a new one."""
        now = time.monotonic()
        arrive = now + self.stamps["acquire"].typical_s  # when a part admitted now reaches the next stage
        ahead = 0  # parts already admitted that will pass through the stage before the new one
        delay = 0.0
        for name in STAGES[1:]:
            stamp = self.stamps[name]
            ahead += self.queues[name].qsize()
            busy = stamp.busy_since
            free = now + (max(0.0, busy + stamp.typical_s - now) if busy is not None else 0.0)
            free += ahead * stamp.typical_s
            delay = max(delay, free - arrive)
            arrive += stamp.typical_s
            ahead += busy is not None  # the part in this stage is ahead of us at the next one
        return delay - self.timing.admission_lead_s  # a little early: a thread's wake-up costs a fraction of a ms

    def refuse(self, part_id: int, t_trigger: float, reason: Reason, skip: VerdictSink | None = None) -> None:
        """A trigger that never became a part (e.g. the PLC triggered while we were not READY) still gets
        its one recorded fail-safe verdict; `skip` is the sink that refused it and already knows."""
        part = self._new_part(t_trigger, part_id, admitted=False)
        self.stats.refused += 1
        self.bus.fail(part, reason, skip=skip)

    @property
    def active(self) -> ProductRuntime:
        return self._active

    def uses(self, runtime: ProductRuntime) -> bool:
        """True while `runtime` is active or a part inspected with it is still open. Once False it stays False
        for a runtime that can no longer be switched to: every part of it was admitted and watched before the
        switch away (both on the acquire thread), so it is safe to close once no stage holds it."""
        return runtime is self._active or self.keeper.holds(runtime)

    def switch(self, runtime: ProductRuntime) -> ProductRuntime:
        """Make `runtime` active for the next part; parts in flight finish with the old one (returned)."""
        old, self._active = self._active, runtime
        log.info("product_switched", old=old.name, new=runtime.name)
        return old

    def set_max_parts(self, n: int | None) -> None:
        self.acquire.max_parts = n

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, warm: Sequence[tuple[ProductRuntime, Frame | None]] = ()) -> None:
        """Start the stages, warm each (runtime, camera frame) in `warm` on them (see `warm`), then take parts.
        A warm-up that fails (ModelError: NaN on the frame) stops the stages again and raises: no part taken."""
        # How long a thread holding the GIL runs before a waiting one (a stage hand-off) gets it. Process-wide: the
        # daemon runs one pipeline per process.
        sys.setswitchinterval(self.station.pipeline.gil_switch_ms / 1e3)
        self.keeper.start()
        for w in self.workers:
            w.start()
        try:
            for rt, frame in warm:
                self.warm(rt, frame)
        except BaseException:
            self.queues["preprocess"].put(STOP)  # passed down stage by stage
            for w in self.workers:
                w.join(WARM_TIMEOUT_S)
            self.keeper.stop()
            raise
        self.acquire.start()
        self._started = True

    def warm(self, rt: ProductRuntime, frame: Frame | None) -> list[float]:
        """Warm `rt` before it takes parts (pipeline.warmup), its model on the inference thread: before the first
        part, or, while parts flow (a reload), between two of them; the parts behind it wait for those runs."""
        return warm_up(rt, frame, lambda model: self.infer.call(model, WARM_TIMEOUT_S))

    def queue_depths(self) -> dict[str, int]:
        return {name: q.qsize() for name, q in self.queues.items()}

    @property
    def idle(self) -> bool:
        """No part inside the pipeline right now."""
        return self.keeper.open_parts == 0

    def stop(self, timeout: float = 10.0, drain_triggers: bool = False) -> bool:
        """Stop taking parts, finish every part already taken (each gets its verdict). True if all stopped.
        `drain_triggers`: first make a part of every trigger already accepted (the PLC link stopped accepting
        them: close_gate), so every acknowledged trigger gets its verdict."""
        if not self._started:
            return True
        if drain_triggers:
            self.acquire.draining.set()
            self.acquire.join(timeout)
        self.acquire.stopping.set()
        threads: list[threading.Thread] = [self.acquire, *self.workers]
        for t in threads:
            t.join(timeout)
        self.keeper.stop()  # returns once every watched part is settled (at the latest at its deadline)
        ok = not any(t.is_alive() for t in threads)
        if not ok:
            log.error("stage_did_not_stop", stages=[t.name for t in threads if t.is_alive()])
        return ok
