"""The PLC link: one worker thread with an asyncio loop that owns the transport and the handshake.

The daemon's threads only append to a command deque and wake the loop (`submit`, `set_ready`, ...),
so nothing they call can block on the PLC. The loop connects with capped exponential backoff, wraps
every request in `timeout`, rewrites the whole block B after each (re)connect, and keeps running the
handshake (heartbeat, watchdog, result buffer) while the PLC is away.

What the link promises the PLC (README "PLC contract"): READY only while the pipeline holds a
reservation for the next trigger (`gate_triggers`) and reports no fault (`watch_health`); triggers and
recipe loads reach the acquire stage in the order the PLC gave them (`next_trigger` applies a load
between the triggers before and after it, and only then answers RECIPE_ACK); on stop, READY and
TRIGGER_ACK end first (`close_gate`), owed results are shown and acknowledged, then the safe state.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from inspectd.decide import FAILSAFE_CODES
from inspectd.plc.config import HandshakeConfig
from inspectd.plc.handshake import (
    CommChanged,
    Handshake,
    RecipeRequested,
    Result,
    ResultDropped,
    SeqSource,
    TriggerMissed,
    TriggerSeen,
)
from inspectd.plc.layout import ErrorCode, Layout
from inspectd.plc.transport import Transport
from inspectd.types import Part, Reason, Trigger, Verdict

log = structlog.get_logger("inspectd.plc")

OnRecipe = Callable[[int], bool]
OnMissed = Callable[[int, str], None]


@dataclass(frozen=True, slots=True)
class RecipeLoad:
    """LOAD_RECIPE, queued between the triggers the PLC sent before and after it."""

    recipe_no: int


# Commands from the daemon's threads to the link's loop (the deque `_cmds`), applied in order by `_drain`.
@dataclass(frozen=True, slots=True)
class ShowResult:
    """A verdict to show the PLC (buffered by the handshake until the result fields are free)."""

    result: Result


@dataclass(frozen=True, slots=True)
class Barrier:
    """Set once every command before it is applied (with the health the daemon asked for)."""

    done: threading.Event


@dataclass(frozen=True, slots=True)
class ActiveRecipe:
    plc_id: int


@dataclass(frozen=True, slots=True)
class RecipeAnswer:
    """LOAD_RECIPE was applied (ok: RECIPE_ACK) or refused (RECIPE_FAIL) on the acquire thread."""

    recipe_no: int
    ok: bool


Command = ShowResult | Barrier | ActiveRecipe | RecipeAnswer


@dataclass
class LinkStats:
    """Counters of one link; written by its worker, read by anyone (ints: torn reads are harmless)."""

    reconnects: int = 0  # sessions lost after being up
    connect_failures: int = 0
    write_errors: int = 0  # failed or timed-out requests (read or write)
    missed_triggers: int = 0
    overruns: int = 0  # results dropped because the buffer was full
    comm_lost: int = 0  # PLC heartbeat watchdog fired
    published: int = 0  # results shown to the PLC
    triggers: int = 0
    submit_dropped: int = 0  # verdicts refused because the link's inbox was full
    unacked_at_stop: int = 0  # results still owed (buffered, shown and not ACKed, or in flight) at the safe state
    connections_dropped: int = 0  # server mode: over max_connections (or out of descriptors)
    connections_refused: int = 0  # server mode: not on the allow list
    accept_errors: int = 0  # server mode: accept() failed (descriptors, memory)
    protocol_errors: int = 0  # server mode: unknown unit ids, exception answers, garbage frames, unread answers
    dropped_part_ids: deque[int] = field(default_factory=lambda: deque(maxlen=1000))
    publish_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))

    def latency_ms(self, q: float) -> float | None:
        """Quantile q of verdict handed over -> block B with it written (server: in the datastore)."""
        samples = sorted(self.publish_latency_s)
        if not samples:
            return None
        return samples[min(len(samples) - 1, int(q * len(samples)))] * 1e3


class PlcLink(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout: float = 3.0, flush_s: float = 0.0) -> None: ...
    def submit(self, verdict: Verdict, part: Part | None) -> None: ...
    def next_trigger(self, timeout: float) -> Trigger | None: ...
    def set_ready(self, ready: bool, error_code: int = 0) -> None: ...
    def set_active_recipe(self, plc_id: int) -> None: ...
    def gate_triggers(self, reserve: Callable[[], bool]) -> None: ...
    def watch_health(self, probe: Callable[[], int]) -> None: ...
    def close_gate(self, timeout: float = 1.0) -> bool: ...

    @property
    def connected(self) -> bool: ...

    @property
    def part_id(self) -> int: ...

    stats: LinkStats


class NoPlcLink:
    """`plc: {type: none}`: no PLC. Triggers never come; verdicts go nowhere."""

    def __init__(self) -> None:
        self.stats = LinkStats()
        self._stop = threading.Event()

    def start(self) -> None:
        self._stop.clear()

    def stop(self, timeout: float = 3.0, flush_s: float = 0.0) -> None:
        self._stop.set()

    def submit(self, verdict: Verdict, part: Part | None) -> None:
        return None

    def next_trigger(self, timeout: float) -> Trigger | None:
        self._stop.wait(timeout)  # the caller polls with a timeout; don't let it spin
        return None

    def set_ready(self, ready: bool, error_code: int = 0) -> None:
        return None

    def set_active_recipe(self, plc_id: int) -> None:
        return None

    def gate_triggers(self, reserve: Callable[[], bool]) -> None:
        return None

    def watch_health(self, probe: Callable[[], int]) -> None:
        return None

    def close_gate(self, timeout: float = 1.0) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return False

    @property
    def part_id(self) -> int:
        return 0


class TransportLink:
    """PlcLink over any `Transport`."""

    INBOX_MAX = 4096
    BACKOFF_MIN_S = 0.05
    GATE_RECHECK_S = 0.002  # while the pipeline refuses READY: room can free without a verdict (a queue drains)

    def __init__(self, make_transport: Callable[[Callable[[], None]], Transport], layout: Layout,
                 handshake: HandshakeConfig, *, on_recipe: OnRecipe, on_missed: OnMissed | None = None,
                 on_publish: Callable[[float], None] | None = None,
                 timeout_s: float = 0.25, poll_s: float = 0.01, backoff_max_s: float = 2.0,
                 linger_s: float = 0.0, name: str = "plc", seqs: SeqSource | None = None,
                 alive: Callable[[], bool] | None = None, fast_poll_s: float | None = None,
                 on_trigger: Callable[[int, float], None] | None = None) -> None:
        self.stats = LinkStats()
        self.layout = layout
        self.name = name
        self._make_transport = make_transport
        self._hs_cfg = handshake
        self._on_recipe = on_recipe
        self._on_missed = on_missed
        self._on_trigger = on_trigger  # (part_id, t): a trigger accepted, before it is acknowledged (journal ahead)
        self._on_publish = on_publish  # seconds from verdict handed over to block B written (metrics)
        self._timeout = timeout_s
        self._poll = poll_s
        self._fast_poll = poll_s if fast_poll_s is None else min(fast_poll_s, poll_s)  # while the PLC is mid-step
        self._seqs = seqs  # RESULT_SEQ source and RUN_EPOCH (persisted by the registry's RunState)
        self._alive = alive  # the daemon's "parts are flowing": gates VISION_HEARTBEAT
        self._backoff_max = backoff_max_s
        self._linger = linger_s
        self._cmds: deque[Command] = deque()
        self._triggers: queue.Queue[Trigger | RecipeLoad] = queue.Queue(maxsize=handshake.trigger_queue)
        self._want: tuple[bool, int] = (False, int(ErrorCode.NOT_READY))  # the daemon's set_ready
        self._probe: Callable[[], int] | None = None  # the pipeline's fault as an ERROR_CODE (0: none)
        self._reserve: Callable[[], bool] | None = None
        self._gate_refused = False  # the last reservation asked for was refused: look again soon
        self._flush_until = 0.0  # stopping: owed results may be shown and acknowledged until then
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._started = threading.Event()
        self._transport: Transport | None = None
        self._part_id = 0

    # ------------------------------------------------------------------ daemon-facing, any thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name=f"{self.name}-link", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def stop(self, timeout: float = 3.0, flush_s: float = 0.0) -> None:
        """Up to `flush_s` for every owed result (buffered, or shown and not yet acknowledged) to be
        acknowledged by the PLC, then write the safe state (not READY, ERROR=SHUTDOWN), close, join;
        bounded by `timeout` + `flush_s`."""
        self._flush_until = time.monotonic() + flush_s
        self._stopping = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout + flush_s)
            if self._thread.is_alive():
                log.error("plc_link_stop_timeout", link=self.name)

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        if len(self._cmds) >= self.INBOX_MAX:
            self.stats.submit_dropped += 1
            self.stats.dropped_part_ids.append(verdict.part_id)
            return
        self._cmds.append(ShowResult(Result(part_id=verdict.part_id, ok=verdict.plc_ok, code=verdict.result_code,
                                            score=verdict.score, inspection_ms=verdict.latency_ms,
                                            t_ready=time.monotonic(), recipe_no=verdict.recipe_no)))
        self._poke()

    def next_trigger(self, timeout: float) -> Trigger | None:
        """The next accepted trigger, in the PLC's order. A LOAD_RECIPE the PLC gave between two triggers is
        applied here first, on the caller's (acquire) thread, between those parts: `on_recipe` switches, and
        RECIPE_ACK with ACTIVE_RECIPE (or RECIPE_FAIL) is shown only once it returned."""
        end = time.monotonic() + timeout
        while True:
            try:
                item = self._triggers.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return None
            if isinstance(item, Trigger):
                return item
            ok = bool(self._call_quietly(self._on_recipe, item.recipe_no))
            self._cmds.append(RecipeAnswer(item.recipe_no, ok))
            self._poke()
            log.info("plc_recipe_applied" if ok else "plc_recipe_refused", link=self.name, recipe_no=item.recipe_no)

    def set_ready(self, ready: bool, error_code: int = 0) -> None:
        """The daemon's state: READY allowed, or not with this ERROR_CODE (6 when none is given)."""
        if not ready and not error_code:
            error_code = ErrorCode.NOT_READY
        self._want = (ready, int(error_code))
        self._poke()

    def gate_triggers(self, reserve: Callable[[], bool]) -> None:
        """READY needs `reserve()` (the pipeline's room for one more part) to have said True; it is called on the
        link's loop whenever READY would otherwise be shown and no reservation is held."""
        self._reserve = reserve

    def watch_health(self, probe: Callable[[], int]) -> None:
        """`probe()` is the pipeline's fault as an ERROR_CODE (0 none): READY drops and ERROR_CODE shows it
        while the daemon is otherwise ready. Read on every pass of the link's loop (a verdict wakes it)."""
        self._probe = probe

    def close_gate(self, timeout: float = 1.0) -> bool:
        """Stop: READY and TRIGGER_ACK end now (ERROR_CODE 7 while owed results are still shown). True once the
        link's loop applied it: every trigger it accepted before is then waiting in `next_trigger`."""
        done = threading.Event()
        self._want = (False, int(ErrorCode.SHUTDOWN))
        self._cmds.append(Barrier(done))
        self._poke()
        return done.wait(timeout)

    def set_active_recipe(self, plc_id: int) -> None:
        self._cmds.append(ActiveRecipe(plc_id))
        self._poke()

    @property
    def connected(self) -> bool:
        t = self._transport
        return t is not None and t.connected

    @property
    def part_id(self) -> int:
        """PART_ID of the latest block A (hardware-trigger mode reads it when the frame arrives)."""
        return self._part_id

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: stop() is in charge
                loop.call_soon_threadsafe(wake.set)

    # ------------------------------------------------------------------ worker
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("plc_link_crashed", link=self.name)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        hs = Handshake(self._hs_cfg, time.monotonic(), seqs=self._seqs, alive=self._alive)
        self._hs = hs
        hs.admit = self._admit
        transport = self._make_transport(self._wake.set)
        self._transport = transport
        self._started.set()
        backoff = self.BACKOFF_MIN_S
        while not self._finished(hs):
            try:
                await asyncio.wait_for(transport.open(), self._timeout)
            except Exception as exc:
                self.stats.connect_failures += 1
                log.warning("plc_connect_failed", link=self.name, error=repr(exc), retry_s=backoff)
                await self._close(transport)
                await self._idle(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            backoff = self.BACKOFF_MIN_S
            log.info("plc_connected", link=self.name)
            try:
                await self._session(transport)
            except Exception as exc:
                self.stats.write_errors += 1
                if not self._stopping:
                    self.stats.reconnects += 1
                    log.warning("plc_io_failed", link=self.name, error=repr(exc) or type(exc).__name__)
                await self._close(transport)
        await self._safe_state(transport)

    async def _session(self, transport: Transport) -> None:
        hs = self._hs
        written: list[int] | None = None  # None: rewrite block B whole (fresh session)
        next_read = 0.0
        while not self._finished(hs):
            self._drain(hs)  # verdicts first: a wake-up for a verdict writes it without waiting for a poll
            now = time.monotonic()
            if transport.event_driven or now >= next_read:
                words = await asyncio.wait_for(transport.read_a(), self._timeout)
                now = time.monotonic()
                inputs = self.layout.decode_a(words)
                self._part_id = inputs.part_id
                hs.on_inputs(inputs, now)
                # after the inputs: a trigger just seen makes the next step (TRIGGER dropped) a fast poll away
                next_read = now + (self._fast_poll if hs.awaiting_plc(now) else self._poll)
            hs.tick(now)
            self._events(hs)
            out = self.layout.encode_b(hs.outputs())
            if out != written:
                await asyncio.wait_for(transport.write_b(out), self._timeout)
                written = out
                self._published(hs)
            await self._wait(hs, None if transport.event_driven else max(0.0, next_read - time.monotonic()))

    async def _idle(self, seconds: float) -> None:
        """While disconnected: keep the handshake running (results buffer, heartbeat, watchdog)."""
        end = time.monotonic() + seconds
        hs = self._hs
        while not self._finished(hs) and (now := time.monotonic()) < end:
            self._drain(hs)
            hs.on_inputs(hs.inputs, now)  # same inputs: no edges, but buffered results move on
            hs.tick(now)
            self._events(hs)
            await self._wait(hs, end - now)

    async def _wait(self, hs: Handshake, poll: float | None) -> None:
        assert self._wake is not None
        timeout = max(0.0, hs.next_deadline() - time.monotonic())
        if poll is not None:
            timeout = min(timeout, poll)
        if self._stopping:
            timeout = min(timeout, max(0.0, self._flush_until - time.monotonic()))
        if self._gate_refused:
            timeout = min(timeout, self.GATE_RECHECK_S)
        if self._cmds:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def _admit(self) -> bool:
        """Room for the next trigger: in this link's queue (one place kept for a recipe load) and, with a gate,
        reserved in the pipeline."""
        reserve = self._reserve
        if self._triggers.qsize() >= self._triggers.maxsize - 1:
            return False
        ok = reserve is None or bool(self._call_quietly(reserve))
        self._gate_refused = not ok
        return ok

    def _finished(self, hs: Handshake) -> bool:
        """Stopping, and nothing owed to the PLC any more (or the flush time is up)."""
        if not self._stopping:
            return False
        owed = hs.pending + hs.in_flight + hs.outputs().result_valid
        return not owed or time.monotonic() >= self._flush_until

    def _health(self, hs: Handshake) -> None:
        ready, code = self._want
        fault = 0
        if ready and self._probe is not None:
            got = self._call_quietly(self._probe)
            fault = int(ErrorCode.NOT_READY) if got is None else int(got)  # a broken probe is not healthy
        hs.set_health(ready and not fault, code if not ready else fault)

    def _drain(self, hs: Handshake) -> None:
        self._gate_refused = False  # set again by this pass's READY, if the pipeline still refuses
        self._health(hs)
        while self._cmds:
            cmd = self._cmds.popleft()
            if isinstance(cmd, ShowResult):
                hs.push_result(cmd.result)
            elif isinstance(cmd, Barrier):  # health applied above, reservation gone: triggers now are refused
                hs.withdraw()
                cmd.done.set()
            elif isinstance(cmd, ActiveRecipe):
                hs.set_active_recipe(cmd.plc_id)
            else:
                hs.recipe_answer(cmd.recipe_no, cmd.ok)

    def _published(self, hs: Handshake) -> None:
        t = time.monotonic()
        while hs.published:
            r = hs.published.popleft()
            self.stats.published += 1
            self.stats.publish_latency_s.append(t - r.t_ready)
            if self._on_publish is not None:
                self._call_quietly(self._on_publish, t - r.t_ready)

    def _events(self, hs: Handshake) -> None:
        while hs.events:
            e = hs.events.popleft()
            if isinstance(e, TriggerSeen):
                self.stats.triggers += 1
                if self._on_trigger is not None:  # before block B with TRIGGER_ACK is written
                    self._call_quietly(self._on_trigger, e.part_id, e.t)
                try:  # READY reserved room here (gate_triggers): Full only without a gate
                    self._triggers.put_nowait(Trigger(part_id=e.part_id, t_trigger=e.t))
                except queue.Full:  # the camera stage is not taking triggers: answer the part fail-safe
                    self.stats.missed_triggers += 1
                    log.error("plc_trigger_queue_full", link=self.name, part_id=e.part_id)
                    hs.push_result(Result(e.part_id, False, FAILSAFE_CODES[Reason.OVERFLOW], 0.0, 0.0, e.t))
                    if self._on_missed is not None:  # answered here; the daemon journals it
                        self._call_quietly(self._on_missed, e.part_id, "trigger_queue_full")
            elif isinstance(e, TriggerMissed):
                self.stats.missed_triggers += 1
                log.warning("plc_missed_trigger", link=self.name, part_id=e.part_id, why=e.why)
                if self._on_missed is not None:
                    self._call_quietly(self._on_missed, e.part_id, e.why)
            elif isinstance(e, ResultDropped):
                self.stats.overruns += 1
                self.stats.dropped_part_ids.append(e.result.part_id)
                log.error("plc_result_overrun", link=self.name, part_id=e.result.part_id,
                          depth=self._hs_cfg.buffer_depth)
            elif isinstance(e, RecipeRequested):  # in order with the triggers: applied between them
                log.info("plc_recipe_requested", link=self.name, recipe_no=e.recipe_no)
                try:
                    self._triggers.put_nowait(RecipeLoad(e.recipe_no))
                except queue.Full:
                    log.error("plc_recipe_queue_full", link=self.name, recipe_no=e.recipe_no)
                    hs.recipe_answer(e.recipe_no, False)
            elif isinstance(e, CommChanged):
                if e.lost:
                    self.stats.comm_lost += 1
                    log.error("plc_comm_lost", link=self.name, heartbeat_ms=self._hs_cfg.plc_heartbeat_ms)
                else:
                    log.info("plc_comm_restored", link=self.name)

    def _call_quietly(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            log.exception("plc_callback_failed", link=self.name, callback=getattr(fn, "__name__", repr(fn)))
            return None

    async def _close(self, transport: Transport) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(transport.close(), self._timeout)

    async def _safe_state(self, transport: Transport) -> None:
        """Not READY, not VALID, ERROR=SHUTDOWN -- written once, within one timeout, then closed."""
        self._drain(self._hs)
        owed = self._hs.pending + self._hs.in_flight + self._hs.outputs().result_valid
        if owed:
            self.stats.unacked_at_stop += owed
            log.error("plc_results_unacknowledged_at_stop", link=self.name, owed=owed)
        self._hs.stop()
        words = self.layout.encode_b(self._hs.outputs())
        try:
            await asyncio.wait_for(transport.open(), self._timeout)  # no-op while connected / listening
            await asyncio.wait_for(transport.write_b(words), self._timeout)
            if self._linger:
                await asyncio.sleep(self._linger)  # server: let a polling PLC read it before we go
            log.info("plc_safe_state_written", link=self.name)
        except Exception as exc:
            log.warning("plc_safe_state_not_written", link=self.name, error=repr(exc))
        await self._close(transport)
