"""The vision/PLC handshake as a transport-free state machine.

Feed it block A snapshots (`on_inputs`), finished results (`push_result`) and the clock (`tick`);
read block B from `outputs()` and what happened from `events`. No I/O and no threads: the link
owns one instance and calls it from its worker only. Timestamps are `time.monotonic()` seconds.

Rules (README "PLC interface" has the timing diagram):
- READY = healthy, ONLINE, TRIGGER_ENABLE, no trigger being acknowledged, and room in the result
  buffer for every part already triggered -- so a PLC that waits for READY never overruns it -- and a
  reservation from `admit` (the pipeline's room for the next part), held until a trigger uses it.
- TRIGGER rising edge while READY -> TRIGGER_ACK + BUSY and a trigger event; while not READY ->
  MISSED_TRIGGER (latched) and a missed event. TRIGGER_ACK drops once the PLC drops TRIGGER.
- Results wait in a FIFO; the head is shown with RESULT_VALID, RESULT_SEQ+1 and DONE_TOGGLE flipped.
  RESULT_ACK clears VALID/OK/NG; the next result is shown once the PLC drops RESULT_ACK. A result
  arriving with the buffer full is dropped and OVERRUN latched (the PLC rejects the part: no result).
- LOAD_RECIPE rising edge -> a recipe event; the answer sets RECIPE_ACK (ACTIVE_RECIPE follows)
  or RECIPE_FAIL; both clear when the PLC drops LOAD_RECIPE.
- PLC_HEARTBEAT unchanged for 3 periods -> comm lost: ERROR + PLC_COMM_LOST, latched until CLEAR_ERROR.
  The watchdog arms when PLC_HEARTBEAT first changes (a PLC without a heartbeat is never called lost).
- VISION_HEARTBEAT counts every heartbeat period only while `alive()` (the daemon's "parts are flowing")
  holds and the daemon is not starting or stopped: a stalled pipeline or a dead process stops it.
- ERROR is set exactly when ERROR_CODE is not 0 (one function decides both).
- RESULT_SEQ comes from a `SeqSource` (persisted across restarts); RUN_EPOCH is fixed per process:
  a result is new to the PLC when (RUN_EPOCH, RESULT_SEQ) differs from the pair it latched last.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from inspectd.plc.config import HandshakeConfig
from inspectd.plc.layout import ErrorCode, PlcInputs, VisionOutputs


@dataclass(frozen=True, slots=True)
class Result:
    """One verdict as the PLC sees it."""

    part_id: int
    ok: bool
    code: int
    score: float
    inspection_ms: float
    t_ready: float  # when the verdict was handed to the link (latency origin)
    recipe_no: int = 0  # RECIPE_NO (plc_id) that judged the part: RESULT_RECIPE


@dataclass(frozen=True, slots=True)
class TriggerSeen:
    part_id: int
    t: float


@dataclass(frozen=True, slots=True)
class TriggerMissed:
    part_id: int
    why: str


@dataclass(frozen=True, slots=True)
class RecipeRequested:
    recipe_no: int


@dataclass(frozen=True, slots=True)
class ResultDropped:
    result: Result


@dataclass(frozen=True, slots=True)
class CommChanged:
    lost: bool


Event = TriggerSeen | TriggerMissed | RecipeRequested | ResultDropped | CommChanged


LINE_RUNNING_S = 1.0  # a trigger this recent means the next one is due: client modes keep polling fast


class SeqSource(Protocol):
    """Where RESULT_SEQ numbers come from (inspectd.plc.runstate.RunState persists them)."""

    epoch: int

    def next_seq(self) -> int: ...


class CountingSeq:
    """In-memory RESULT_SEQ from 1, RUN_EPOCH fixed: for tests and tools that do not restart."""

    def __init__(self, epoch: int = 1, last: int = 0) -> None:
        self.epoch, self._last = epoch, last

    def next_seq(self) -> int:
        self._last = self._last % 0xFFFF + 1  # 1..65535: 0 means "no result yet"
        return self._last


class Handshake:
    def __init__(self, cfg: HandshakeConfig, now: float, *, seqs: SeqSource | None = None,
                 alive: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        self._seqs = seqs or CountingSeq()
        self._alive = alive or (lambda: True)
        self.events: deque[Event] = deque()
        self.published: deque[Result] = deque()  # shown since the link last drained it (latency samples)
        self._fifo: deque[Result] = deque()
        self._in_flight: Counter[int] = Counter()  # triggered part ids without a result yet
        self._prev = PlcInputs()
        self._healthy, self._health_code = False, int(ErrorCode.NOT_READY)  # STARTING until the daemon says up
        self._starting = True  # until the first set_health(True)
        self._stopped = False
        self._trigger_ack = False
        self._last_trigger_t = float("-inf")
        self._shown: Result | None = None  # fields of the last shown result (kept after ACK)
        self._valid = False
        self._ack_wait = False  # ACK seen; the next result waits for the PLC to drop it
        self._seq = 0
        self._toggle = False
        self._missed = self._overrun = False
        self._recipe: str | None = None  # None | "pending" | "ack" | "fail"
        self._active_recipe = 0
        self._vhb = 0
        self._hb_period = cfg.heartbeat_ms / 1e3
        self._next_hb = now + self._hb_period
        self._plc_hb: int | None = None
        self._plc_hb_t = now
        self._plc_hb_armed = False  # the watchdog waits for the first change of PLC_HEARTBEAT
        self._comm_alive = True  # until proven otherwise by the watchdog
        self._comm_lost = False  # latched
        # READY's promise (set by the link): True reserves room in the pipeline for the next trigger; the
        # reservation is held until a trigger uses it, so a trigger sent on READY is always taken
        self.admit: Callable[[], bool] | None = None
        self._admitted = False

    # ------------------------------------------------------------------ inputs
    def on_inputs(self, a: PlcInputs, now: float) -> None:
        p = self._prev
        if a.plc_heartbeat != self._plc_hb:
            self._plc_hb_armed = self._plc_hb_armed or self._plc_hb is not None
            self._plc_hb, self._plc_hb_t = a.plc_heartbeat, now
            if not self._comm_alive:
                self._comm_alive = True
                self.events.append(CommChanged(lost=False))
        if a.clear_error and not p.clear_error:
            self._missed = self._overrun = False
            if self._comm_alive:
                self._comm_lost = False
        if a.trigger and not p.trigger:
            self._on_trigger(a, now)
        elif not a.trigger and self._trigger_ack:
            self._trigger_ack = False
        if a.result_ack and not p.result_ack and self._valid and self.cfg.result_ack:
            self._valid = False
            self._ack_wait = True
        if not a.result_ack:
            self._ack_wait = False
        if a.load_recipe and not p.load_recipe:
            self._recipe = "pending"
            self.events.append(RecipeRequested(a.recipe_no))
        elif not a.load_recipe and p.load_recipe:
            self._recipe = None
        self._prev = a
        self._publish_next()

    def _on_trigger(self, a: PlcInputs, now: float) -> None:
        why = self._not_ready_reason(a)
        if why == "not_healthy" and self._admitted:
            why = ""  # READY was shown with a reservation: the PLC may have read it just before the fault
        if why:
            self._missed = True
            self.events.append(TriggerMissed(a.part_id, why))
            return
        self._trigger_ack = True
        self._last_trigger_t = now
        self._admitted = False  # this trigger used the reservation
        self._in_flight[a.part_id] += 1
        self.events.append(TriggerSeen(a.part_id, now))

    def _not_ready_reason(self, a: PlcInputs) -> str:
        if self._stopped:
            return "stopped"
        if not self._healthy:
            return "not_healthy"
        if a.set_offline:
            return "offline"
        if not a.trigger_enable:
            return "trigger_not_enabled"
        if self._trigger_ack:
            return "previous_trigger_not_dropped"
        if self._held() + sum(self._in_flight.values()) >= self.cfg.buffer_depth:
            return "result_buffer_full"
        if self.admit is not None and not self._admitted:
            self._admitted = bool(self.admit())
            if not self._admitted:
                return "pipeline_full"
        return ""

    def _held(self) -> int:
        return (int(self._valid) + len(self._fifo)) if self.cfg.result_ack else 0

    # ------------------------------------------------------------------ results
    def push_result(self, r: Result) -> None:
        if self._in_flight[r.part_id] > 0:
            self._in_flight[r.part_id] -= 1
        if self._in_flight[r.part_id] <= 0:
            del self._in_flight[r.part_id]
        if not self.cfg.result_ack:
            self._show(r)
            return
        if self._held() >= self.cfg.buffer_depth:
            self._overrun = True
            self.events.append(ResultDropped(r))
            return
        self._fifo.append(r)
        self._publish_next()

    def _publish_next(self) -> None:
        if self._fifo and not self._valid and not self._ack_wait:
            self._show(self._fifo.popleft())

    def _show(self, r: Result) -> None:
        self._shown = r
        self._valid = True
        self._seq = self._seqs.next_seq()
        self._toggle = not self._toggle
        self.published.append(r)

    # ------------------------------------------------------------------ daemon side
    def set_health(self, ok: bool, code: int = 0) -> None:
        """READY allowed (ok) or not, with the ERROR_CODE that says why (1 camera, 2 model, 3 timeout, 6 not
        ready); not ok always shows an ERROR_CODE, 6 when none is given."""
        self._healthy, self._health_code = ok, (0 if ok else int(code or ErrorCode.NOT_READY))
        self._starting = self._starting and not ok

    def set_active_recipe(self, plc_id: int) -> None:
        self._active_recipe = plc_id

    def recipe_answer(self, recipe_no: int, ok: bool) -> None:
        if self._recipe != "pending":
            return  # the PLC dropped LOAD_RECIPE meanwhile: nobody is waiting
        self._recipe = "ack" if ok else "fail"
        if ok:
            self._active_recipe = recipe_no

    def withdraw(self) -> None:
        """Drop READY's reservation: from now on a trigger needs READY anew (the daemon is stopping)."""
        self._admitted = False

    def stop(self) -> None:
        """Safe state: not READY, not VALID, ERROR with SHUTDOWN."""
        self._stopped = True
        self._valid = False

    def tick(self, now: float) -> None:
        if now >= self._next_hb:
            if self._heartbeat_allowed():
                self._vhb = (self._vhb + 1) & 0xFFFF
            self._next_hb = max(self._next_hb + self._hb_period, now)  # no burst after a stall
        period = self.cfg.plc_heartbeat_ms / 1e3
        if period and self._plc_hb_armed and self._comm_alive and now - self._plc_hb_t > 3 * period:
            self._comm_alive = False
            self._comm_lost = True
            self.events.append(CommChanged(lost=True))

    def next_deadline(self) -> float:
        """When `tick` next has something to do."""
        period = self.cfg.plc_heartbeat_ms / 1e3
        armed = period and self._plc_hb_armed and self._comm_alive
        wd = self._plc_hb_t + 3 * period if armed else float("inf")
        return min(self._next_hb, wd)

    # ------------------------------------------------------------------ outputs
    def _heartbeat_allowed(self) -> bool:
        """Starting (NOT_READY from construction until the daemon's first set_health(True)) and stopped
        freeze the heartbeat; otherwise the daemon's liveness decides (a fault with its ERROR_CODE still beats:
        the process is alive and says what is wrong)."""
        if self._stopped or self._starting:
            return False
        try:
            return bool(self._alive())
        except Exception:  # a broken liveness probe must not look alive
            return False

    def awaiting_plc(self, now: float) -> bool:
        """The PLC is expected to act soon, so a client-mode link polls fast: a trigger or result is in the
        four-phase handshake, a recipe answer is shown, parts are in flight, or the line triggered within the
        last `LINE_RUNNING_S` (the next trigger is due). An idle line is polled at the slow rate."""
        return bool(self._trigger_ack or self._valid or self._ack_wait or self._in_flight or self._fifo
                    or self._recipe is not None or now - self._last_trigger_t < LINE_RUNNING_S)

    @property
    def run_epoch(self) -> int:
        return self._seqs.epoch

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    @property
    def pending(self) -> int:
        return len(self._fifo)

    @property
    def comm_alive(self) -> bool:
        return self._comm_alive

    @property
    def inputs(self) -> PlcInputs:
        return self._prev

    def error_code(self) -> int:
        """The one source of ERROR_CODE; ERROR is `error_code() != 0`. First match wins."""
        if self._stopped:
            return ErrorCode.SHUTDOWN
        if not self._healthy:
            return self._health_code
        if self._comm_lost:
            return ErrorCode.PLC_COMM_LOST
        if self._recipe == "fail":
            return ErrorCode.RECIPE
        return ErrorCode.NONE

    def outputs(self) -> VisionOutputs:
        r = self._shown
        a = self._prev
        online = not self._stopped and not a.set_offline
        valid = self._valid and not self._stopped
        code = self.error_code()
        return VisionOutputs(
            ready=not self._not_ready_reason(a),
            trigger_ack=self._trigger_ack and not self._stopped,
            busy=bool(self._in_flight) and not self._stopped,
            result_valid=valid,
            result_ok=valid and r is not None and r.ok,
            result_ng=valid and r is not None and not r.ok,
            error=code != 0,
            recipe_ack=self._recipe == "ack",
            recipe_fail=self._recipe == "fail",
            online=online,
            overrun=self._overrun,
            missed_trigger=self._missed,
            done_toggle=self._toggle,
            vision_heartbeat=self._vhb,
            result_part_id=r.part_id if r else 0,
            result_seq=self._seq,
            result_code=r.code if r else 0,
            error_code=code,
            active_recipe=self._active_recipe,
            score=r.score if r else 0.0,
            inspection_ms=round(r.inspection_ms) if r else 0,
            results_pending=len(self._fifo),
            result_recipe=r.recipe_no if r else 0,
            run_epoch=self._seqs.epoch,
        )
