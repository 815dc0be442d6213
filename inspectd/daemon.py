"""The daemon: start-up checks, the main loop that acts on signals, reload between parts, ordered shutdown.

Signal handlers only set flags; the main loop does the work (gunicorn's arbiter, Patroni).
"""

from __future__ import annotations

import gc
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from inspectd.archive import Archive
from inspectd.camera.base import Finite, Source
from inspectd.camera.registry import make_source
from inspectd.config.load import Config, load_config
from inspectd.console.app import Console
from inspectd.engines.golden import require_golden
from inspectd.errors import ConfigError, DiskFullError, ExitCode, InspectdError
from inspectd.journal import Journal
from inspectd.log import VerdictLogger
from inspectd.metrics import Metrics
from inspectd.outputs.plant import PlantOutputs
from inspectd.pipeline.health import Fault
from inspectd.pipeline.pipeline import Pipeline
from inspectd.pipeline.runtime import ProductRuntime, build_runtime
from inspectd.pipeline.warmup import pin
from inspectd.plc.layout import ErrorCode
from inspectd.plc.link import PlcLink
from inspectd.plc.registry import make_plc_link
from inspectd.plc.runstate import state_path_for
from inspectd.supervise.liveness import Liveness
from inspectd.supervise.signals import SignalFlags
from inspectd.supervise.systemd import Notifier
from inspectd.supervise.watchdog import Watchdog
from inspectd.timing import CycleTiming
from inspectd.types import Frame, Outcome, Reason

log = structlog.get_logger("inspectd.daemon")

STATUS_EVERY_S = 2.0  # STATUS= for `systemctl status`; fps is measured over this window
LOAD_STEP_S = 120.0  # EXTEND_TIMEOUT_USEC per product loaded: many TensorRT engines can outlast TimeoutStartSec
SHUTDOWN_S = 60.0  # the ordered shutdown (drain, journal, outputs) may keep the main loop this long
RELOADED_KEYS = ("product", "products_dir", "backend", "preprocess")  # other station keys need a restart
FLUSH_S = 3.0  # on stop, owed results may wait this long for the PLC's RESULT_ACK before the safe state
FAULT_CODES = {Fault.CAMERA: ErrorCode.CAMERA, Fault.MODEL: ErrorCode.MODEL, Fault.TIMEOUT: ErrorCode.TIMEOUT}


@dataclass
class Options:
    journal_path: Path | None = None
    max_parts: int | None = None
    handle_signals: bool = True
    extra_sinks: list = field(default_factory=list)
    signals: SignalFlags | None = None  # installed early by `inspectd run`; the daemon makes its own otherwise
    freeze_heap: bool = False  # `inspectd run`: what start made leaves the cyclic GC's reach (see Daemon.start)


def freeze_heap() -> None:
    """Move every object alive now (modules, configs, models: tens of thousands) out of the cyclic GC's reach, so
    a full collection, which stops every thread, scans only what was made since: measured 30-60 ms with them, more
    than a cycle budget, for parts that were on time. Once per process, before READY: a runtime a reload retires
    later is freed by reference counting like any other; only reference cycles among these first objects stay."""
    gc.collect()  # what is garbage now is freed, not kept forever
    gc.freeze()


def free_mb(path: Path) -> float:
    """Free space on the filesystem holding `path` (or its nearest existing parent), in MB."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


def same_filesystem(a: Path, b: Path) -> bool:
    def dev(p: Path) -> int:
        while not p.exists() and p != p.parent:
            p = p.parent
        return p.stat().st_dev

    try:
        return dev(a) == dev(b)
    except OSError:
        return False


class Daemon:
    def __init__(self, config: Config, options: Options | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.options = options or Options()
        self.notifier = notifier or Notifier.from_env()
        self.liveness = Liveness()  # the main loop's heartbeat (/healthz)
        self.runtimes: dict[str, ProductRuntime] = {}
        self.source: Source | None = None
        self.pipeline: Pipeline | None = None
        self.journal: Journal | None = None
        self.metrics: Metrics | None = None  # PLC transport: self.metrics.observe_plc_write(seconds)
        self.archive: Archive | None = None
        self.console: Console | None = None  # the technician console on the metrics port
        self.watchdog: Watchdog | None = None
        self.plc: PlcLink | None = None
        self.plant: PlantOutputs | None = None  # mqtt: / opcua: sections
        self.exit_code = ExitCode.OK
        self.signals = self.options.signals or SignalFlags()
        self._stop, self._reload, self._wake = self.signals.stop, self.signals.reload, self.signals.wake
        self._retired: list[ProductRuntime] = []  # replaced by a reload; closed once their parts have drained
        self.reloads = {"applied": 0, "rejected": 0}
        self._switch_lock = threading.Lock()
        self._pending: ProductRuntime | None = None  # product switch waiting for the acquire thread
        self._fps: float | None = None  # verdicts per second over the last STATUS window
        self._warm_frame: Frame | None = None  # the camera's geometry, for warming runtimes built by a reload

    # ---------------------------------------------------------------------------------- start-up
    def _build_runtimes(self, config: Config) -> dict[str, ProductRuntime]:
        """Load every product's model and run its golden gate, so a switch between parts is instant."""
        runtimes: dict[str, ProductRuntime] = {}
        try:
            for name, product in config.products.items():
                self.notifier.extend_timeout(LOAD_STEP_S)
                self.liveness.extend(LOAD_STEP_S)
                rt = build_runtime(config.station, product)
                runtimes[name] = rt
                if self.source is not None and self.pipeline is not None:  # a reload: warm before the switch
                    pin(rt, self.source)  # (at start: once the camera is up, on the started stages)
                    self.pipeline.warm(rt, self._warm_frame)
                require_golden(rt, product)  # GoldenCheckError lists every failing reference image
        except Exception:
            for rt in runtimes.values():
                rt.close()
            raise
        return runtimes

    def start(self) -> None:
        st = self.config.station
        log.info("starting", station=st.name, product=st.product, products=sorted(self.config.products),
                 budget_ms=st.cycle_budget_ms, pid=os.getpid())
        if st.metrics.enabled:  # first, so /healthz answers (and /readyz says why not) while models load
            self.metrics = Metrics.for_daemon(self, CycleTiming.of(st).budget_s, st.metrics.cache_s)
        journal_path = self.options.journal_path or st.journal.path
        if self.metrics:
            if st.console.enabled:
                self.console = Console(self, st.console, st.cycle_budget_ms, journal_path,
                                       st.archive.path if st.archive.enabled else None)
                self.console.start()
            self.metrics.start(st.metrics.address, st.metrics.port, app=self.console)
        # The PLC link first: a client/S7-mode PLC sees STARTING (not READY, ERROR_CODE 6, the new RUN_EPOCH,
        # heartbeat still) over whatever a previous process left in its memory, while models load.
        self.plc = make_plc_link(st.plc, on_recipe=self.switch_by_plc_id, on_missed=self._on_missed_trigger,
                                 on_publish=self.metrics.observe_plc_write if self.metrics else None,
                                 state_path=state_path_for(journal_path), alive=self._parts_flowing,
                                 on_trigger=self._on_trigger)
        self.plc.set_ready(False, ErrorCode.NOT_READY)  # safe state until every stage is up
        self.plc.set_active_recipe(self.config.products[st.product].plc_id)
        self.plc.start()
        self.runtimes = self._build_runtimes(self.config)
        self.source = make_source(st.camera)
        self.source.open()
        self.source.apply_features(self.config.products[st.product].camera_features)
        self._warm_frame = self.source.sample()
        for rt in self.runtimes.values():
            pin(rt, self.source)
        self.journal = Journal(journal_path, batch=st.journal.batch, maxsize=st.journal.queue,
                               retention_days=st.journal.retention_days, max_mb=st.journal.max_mb,
                               backlog=st.journal.backlog, min_free_mb=st.journal.min_free_mb)
        self.journal.on_health.append(self._on_journal_health)
        self.journal.start()  # journals what a killed predecessor left in the ahead log; DiskFullError: exit 72
        # The journal first, then the PLC (the one waiting): journal.submit writes the verdict's ahead record (a
        # memory copy, microseconds) before the PLC link can show it, so a kill -9 never leaves a verdict the PLC
        # was shown journaled as `interrupted`.
        sinks = [self.journal, self.plc, *self.options.extra_sinks]
        if self.metrics:
            sinks.append(self.metrics)
        if self.console:
            sinks.append(self.console.feed)
        if st.archive.enabled:
            self.archive = Archive(st.archive)
            self.archive.start()
            sinks.append(self.archive)
        if st.log.every_part:
            sinks.append(VerdictLogger())
        self.plant = PlantOutputs(st, self, journal_path, self.metrics.registry if self.metrics else None)
        self.plant.start()  # never waits for a broker: connects in the background
        sinks.extend(self.plant.sinks)
        # A product switch lands on the acquire thread right before a part is made: after each trigger poll, or
        # before each grab in free-run. Camera features and runtime then change together, between parts.
        triggered = st.trigger.source != "free_run"
        self.pipeline = Pipeline(st, self.source, self.runtimes[st.product], sinks=sinks,
                                 triggers=self.plc.next_trigger if triggered else None, reserved_triggers=triggered,
                                 before_part=self._apply_pending if triggered else self._between_free_run_parts)
        if triggered:  # READY = the pipeline holds room for the next trigger (README "PLC contract")
            self.plc.gate_triggers(self.pipeline.admission.reserve)
        self.plc.watch_health(self._fault_code)
        self.pipeline.set_max_parts(self.options.max_parts)
        self.pipeline.on_accept = self.journal.accept  # the ahead record: a SIGKILL cannot make a part vanish
        if st.journal.on_failure == "failsafe":
            self.pipeline.bus.gate = self._journal_gate
        # No keep-alive while a stage holds one part longer than a cycle (at least 1 s): parts are not flowing.
        self.watchdog = Watchdog(self.pipeline.stamps, st.watchdog.stall_s, self.notifier, self._on_stall,
                                 flow_s=CycleTiming.of(st).flow_s)
        if self.options.freeze_heap:
            freeze_heap()
        # Every product warmed on the stage threads before READY: its first part meets the budget like the
        # thousandth (pipeline.warmup)
        self.pipeline.start(warm=[(rt, self._warm_frame) for rt in self.runtimes.values()])
        self.watchdog.start()
        self.plc.set_ready(True)
        self.notifier.ready(self.status_line())
        log.info("ready", journal=str(journal_path), run_id=self.journal.run_id,
                 model_sha256=self.pipeline.active.backend.model_sha256)

    # ---------------------------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        self.signals.install()

    def request_stop(self) -> None:
        self.signals.request_stop()

    def request_reload(self) -> None:
        self.signals.request_reload()

    def _on_stall(self, stage: str, stamp) -> None:
        # Called from the watchdog thread. The stalled thread cannot be stopped: flush what can be flushed, exit.
        self.exit_code = ExitCode.STALL
        self.notifier.status(f"stage {stage} stalled on part {stamp.part_seq}; exiting for restart")
        taken = 0
        if self.pipeline:
            # Take no new part. Those inside get fail-safe verdicts at their deadlines (budget << stall_s).
            self.pipeline.acquire.stopping.set()
            self.pipeline.acquire.join(1.0)
            settle_by = time.monotonic() + CycleTiming.of(self.config.station).settle_s
            while not self.pipeline.idle and time.monotonic() < settle_by:
                time.sleep(0.01)
            taken = self.pipeline.stats.parts_in
        self.safe_outputs(timeout=2.0)
        if self.journal:
            self.journal.close(timeout=2.0)
        self.notifier.status(f"stage {stage} stalled on part {stamp.part_seq}: exit {int(ExitCode.STALL)} for a "
                             f"restart; parts={taken} journaled={self.journal.written if self.journal else 0}")
        os._exit(ExitCode.STALL)

    def _parts_flowing(self) -> bool:
        """PLC link thread, once per heartbeat period: VISION_HEARTBEAT counts only while parts can flow
        (every stage moving or polling), so a stalled pipeline or a hung process stops it."""
        wd = self.watchdog
        return wd is not None and wd.is_alive() and wd.assess().flowing

    def _on_trigger(self, part_id: int, t_trigger: float) -> None:
        """PLC link thread, a trigger accepted, before TRIGGER_ACK is written: its ahead record (kill -9)."""
        journal, pipeline = self.journal, self.pipeline
        if journal is None or pipeline is None:
            return
        rt = pipeline.active  # the recipe it will be judged by unless a switch lands first
        journal.trigger_seen(part_id, t_trigger, rt.name, rt.product.plc_id, rt.backend.model_sha256)

    def _journal_gate(self) -> Reason | None:
        """journal.on_failure: failsafe -- no part passes while its verdict cannot be recorded."""
        journal = self.journal
        return None if journal is None or journal.healthy else Reason.JOURNAL_DOWN

    def _on_journal_health(self, healthy: bool, why: str) -> None:
        """Journal writer thread, on every change: the log and systemd's STATUS; with room wanted, the archive.
        /readyz, the metrics and the PLC's health probe (`_fault_code`) read `journal.healthy` themselves."""
        policy = self.config.station.journal.on_failure
        if healthy:
            log.info("journal_healthy", policy=policy)
        else:
            log.error("journal_unhealthy", why=why, policy=policy,
                      parts="fail-safe journal_down" if policy == "failsafe" else "inspected (alarm only)")
        self.notifier.status(self.status_line() if healthy else f"JOURNAL FAILING ({policy}): {why}")
        journal, archive = self.journal, self.archive
        if not healthy and archive is not None and journal is not None and journal.problem == "disk_full" \
                and same_filesystem(journal.path, archive.root):
            archive.give_room()  # the journal matters more than the images

    def safe_outputs(self, timeout: float | None = None, flush_s: float = 0.0) -> None:
        """PLC outputs to their safe state (the PLC link's stop() does that, after up to `flush_s` for owed results
        to be acknowledged); bounded where the link may hang."""
        plc = self.plc
        if plc is None:
            return

        def stop() -> None:
            try:
                plc.stop(flush_s=flush_s)
            except Exception:
                log.exception("plc_safe_state_failed")

        if timeout is None:
            stop()
            return
        t = threading.Thread(target=stop, name="plc-safe", daemon=True)
        t.start()
        t.join(timeout + flush_s)

    def _on_missed_trigger(self, part_id: int, why: str) -> None:
        """PLC worker: a trigger the link refused (not READY: MISSED_TRIGGER; trigger queue full: answered NG).
        It is journaled as a fail-safe like any part; the PLC side was handled by the link's handshake."""
        log.warning("missed_trigger", part_id=part_id, why=why)
        if self.pipeline is not None:
            reason = Reason.OVERFLOW if why == "trigger_queue_full" else Reason.NOT_READY
            self.pipeline.refuse(part_id, time.monotonic(), reason, skip=self.plc)

    # ---------------------------------------------------------------------------------- products
    def _fault_code(self) -> int:
        """PLC link's health probe: the pipeline's fault as an ERROR_CODE (0 none); READY drops with it."""
        fault = self.pipeline.faults.fault() if self.pipeline is not None else None
        return int(FAULT_CODES[fault]) if fault is not None else self._journal_code()

    def _journal_code(self) -> int:
        """journal.on_failure failsafe: while the journal fails the next trigger would only get journal_down."""
        journal = self.journal
        if journal is not None and not journal.healthy and self.config.station.journal.on_failure == "failsafe":
            return int(ErrorCode.JOURNAL)
        return 0

    def switch_product(self, name: str) -> bool:
        """Make `name` active from the next part on (parts in flight finish with the old recipe).

        Any thread may ask (main loop on reload); the acquire thread applies it between parts."""
        with self._switch_lock:
            rt = self.runtimes.get(name)
            if rt is None or self.pipeline is None or self.source is None:
                log.error("product_switch_refused", product=name, known=sorted(self.runtimes))
                return False
            self._pending = None if self.pipeline.active is rt else rt
            return True

    def _apply_pending(self) -> None:
        """Acquire thread, no part being made: apply a pending switch, camera features first."""
        with self._switch_lock:
            rt, self._pending = self._pending, None
        if rt is not None and self.source is not None and self.pipeline is not None:
            self.source.apply_features(rt.product.camera_features)
            # larger frames may have grown the source's frame memory (GenICam frame pool): GPU preprocessing
            # pins the new block (nothing to do when unchanged)
            rt.preprocess.pin_host_buffers(self.source.host_buffers())
            self.pipeline.switch(rt)
            if self.plc is not None:
                self.plc.set_active_recipe(rt.product.plc_id)  # ACTIVE_RECIPE: what judges the next part

    def _between_free_run_parts(self) -> None:
        """Free-run, before each grab: recipe loads the PLC asked for (next_trigger applies them through
        switch_by_plc_id), then a switch from a reload. A PLC trigger has no part to start in free-run: it is
        answered fail-safe `not_ready` so the PLC is not left waiting for it."""
        if self.plc is not None and self.pipeline is not None:
            while (trig := self.plc.next_trigger(0.0)) is not None:
                log.warning("plc_trigger_in_free_run", part_id=trig.part_id)
                self.pipeline.refuse(trig.part_id, trig.t_trigger, Reason.NOT_READY)
        self._apply_pending()

    def switch_by_plc_id(self, plc_id: int) -> bool:
        """LOAD_RECIPE, called by the PLC link on the acquire thread between the triggers before and after it
        (or before a free-run grab): the switch is applied now, so RECIPE_ACK means applied."""
        product = self.config.product_by_plc_id(plc_id)
        if product is None or not self.switch_product(product.name):
            return False
        self._apply_pending()
        return True

    def reload(self) -> bool:
        """Validate the whole new config, load and self-check its models; on any error keep running the old one
        (whatever the error: a reload must never take the line down). The old runtimes are closed once the
        parts inspected with them have their verdicts (see _close_drained)."""
        self.notifier.reloading()
        try:
            new = load_config(self.config.station_path)
            runtimes = self._build_runtimes(new)
        except Exception as e:
            if isinstance(e, ConfigError):
                problems = e.problems
            elif isinstance(e, InspectdError):
                problems = str(e).splitlines()
            else:  # a bug or the machine (MemoryError, a driver error): the traceback goes with it
                problems = [f"{type(e).__name__}: {e}"]
                log.error("reload_failed", exc_info=True)
            self.reloads["rejected"] += 1
            log.error("reload_rejected", problems=problems)
            self.notifier.ready(self.status_line())
            return False
        old_station = self.config.station
        with self._switch_lock:  # a PLC recipe switch racing the reload must pick from the new runtimes
            old_runtimes, self.config, self.runtimes = self.runtimes, new, runtimes
        active = self.pipeline.active.name if self.pipeline else new.station.product
        if new.station.product != old_station.product or active not in runtimes:
            active = new.station.product  # the file names a new product; otherwise keep what the PLC chose
        self.switch_product(active)
        unapplied = [k for k in type(new.station).model_fields
                     if k not in RELOADED_KEYS and getattr(new.station, k) != getattr(old_station, k)]
        if unapplied:
            log.warning("reload_needs_restart", keys=unapplied)
        # Old runtimes may still be inspecting parts in flight: closed once those have drained.
        self._retired.extend(old_runtimes.values())
        self._close_drained()
        self.reloads["applied"] += 1
        log.info("reloaded", products=sorted(runtimes))
        self.notifier.ready(self.status_line())
        return True

    def _close_drained(self) -> None:
        """Close each retired runtime (model session, GPU buffers) once no part uses it any more."""
        still: list[ProductRuntime] = []
        for rt in self._retired:
            in_use = rt is self._pending or (self.pipeline is not None and self.pipeline.uses(rt))
            if not in_use and rt.close_if_unused():
                log.info("runtime_closed", product=rt.name, model_sha256=rt.backend.model_sha256)
            else:
                still.append(rt)
        self._retired = still

    # ---------------------------------------------------------------------------------- main loop
    def status_line(self) -> str:
        p = self.pipeline
        if p is None:
            return "starting"
        s = p.stats
        fps = self._fps if self._fps is not None else s.verdicts_total / max(time.monotonic() - s.started, 1e-9)
        # A switch (reload, PLC) waits for the gap between two parts: STATUS already names the product chosen.
        pending = self._pending
        product = pending.name if pending is not None else p.active.name
        line = (f"product={product} parts={s.verdicts_total} rejects={s.total(Outcome.REJECT)} "
                f"failsafes={s.total(Outcome.FAILSAFE)} fps={fps:.1f}")
        held = self.watchdog.assess().held if self.watchdog else ()
        return line + (f" not_flowing={','.join(held)}" if held else "")

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        if self.options.handle_signals:  # first (`inspectd run` did it even earlier): no signal may kill a start
            self.install_signal_handlers()
        try:
            self.start()
        except InspectdError as e:
            log.error("cannot_start", error=str(e), exit_code=int(e.exit_code))
            why = (str(e).splitlines() or [type(e).__name__])[0]
            self.notifier.status(f"cannot start (exit {int(e.exit_code)}): {why}")
            if isinstance(e, DiskFullError):
                self._wait_for_room()
            self.shutdown()
            return int(e.exit_code)
        except Exception as e:  # a bug: still leave the PLC outputs safe and close what was opened
            log.error("cannot_start", error=f"{type(e).__name__}: {e}", exit_code=int(ExitCode.FAILURE),
                      exc_info=True)
            self.notifier.status(f"cannot start (exit {int(ExitCode.FAILURE)}): {type(e).__name__}: {e}")
            self.shutdown()
            return int(ExitCode.FAILURE)
        last_status, last_count = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                self.liveness.beat()
                self._wake.wait(0.2)
                self._wake.clear()
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                self._close_drained()
                if self._max_parts_done():
                    break
                if self._source_finished():
                    self._log_finished()
                    break
                now = time.monotonic()
                if now - last_status >= STATUS_EVERY_S and self.pipeline is not None:
                    count = self.pipeline.stats.verdicts_total
                    self._fps, last_status, last_count = (count - last_count) / (now - last_status), now, count
                    self.notifier.status(self.status_line())
        except Exception:  # whatever happens here, the parts in flight still get their verdicts (shutdown)
            log.error("main_loop_failed", exc_info=True)
            self.exit_code = ExitCode.FAILURE
        finally:
            self.shutdown()
        return int(self.exit_code)

    def _wait_for_room(self) -> None:
        """A full journal disk at start: hold the exit up to `journal.disk_full_wait_s`, so systemd's restarts
        (RestartSec=3) do not use up StartLimitBurst (5 in 10 min) in seconds; exit as soon as there is room."""
        cfg = self.config.station.journal
        folder = (self.options.journal_path or cfg.path).parent
        end = time.monotonic() + cfg.disk_full_wait_s
        while time.monotonic() < end and not self._stop.is_set():
            self.notifier.extend_timeout(10.0)
            if free_mb(folder) >= cfg.min_free_mb + 4:  # some margin: SQLite needs room beyond the minimum
                log.info("journal_disk_has_room", path=str(folder), exit_code=int(ExitCode.DISK_FULL))
                return
            self._stop.wait(1.0)

    def _max_parts_done(self) -> bool:
        n = self.options.max_parts
        j = self.journal
        # Every verdict accounted for: a row, a quarantined row or a counted loss (else a lost row waits forever).
        return n is not None and j is not None and j.written + j.quarantined + j.dropped >= n

    def _source_finished(self) -> bool:
        """A replay without loop has served its last image and every part has its verdict and journal row."""
        src, p, j = self.source, self.pipeline, self.journal
        if not isinstance(src, Finite) or not src.exhausted or p is None or not p.idle:
            return False
        return j is None or j.written + j.quarantined + j.dropped >= p.stats.verdicts_total

    def _log_finished(self) -> None:
        assert self.pipeline is not None
        s = self.pipeline.stats
        counts = {o.value: s.total(o) for o in Outcome}
        log.info("replay_finished", parts=s.verdicts_total, **counts, overflows=s.overflows,
                 journal=str(self.journal.path) if self.journal is not None else None)
        self.notifier.status(f"replay finished: {s.verdicts_total} parts, " +
                             ", ".join(f"{k} {v}" for k, v in counts.items()))

    def shutdown(self) -> None:
        """Ordered: stop taking parts, drain every part in flight to its verdict, flush the journal, close."""
        self.notifier.stopping()
        self.liveness.extend(SHUTDOWN_S)
        if self.watchdog:
            self.watchdog.stop()
        # READY and TRIGGER_ACK end first; every trigger the PLC already got an ACK for still becomes a part
        gate_closed = self.plc.close_gate() if self.plc is not None and self.pipeline is not None else False
        if self.pipeline and not self.pipeline.stop(drain_triggers=gate_closed):
            self.exit_code = ExitCode.STALL  # a stage did not finish its part: let systemd restart us
        self.safe_outputs(flush_s=FLUSH_S)  # owed results are shown and acknowledged, then the safe state
        if self.journal:
            self.journal.close()
        if self.plant:  # after the journal: its last rows go out too (bounded by mqtt.drain_s)
            self.plant.close()
        if self.archive:
            self.archive.close()
        if self.source:
            self.source.close()
        for rt in self._retired:  # replaced by a reload and not drained before the stop
            rt.close()
            log.info("runtime_closed", product=rt.name, model_sha256=rt.backend.model_sha256, at="shutdown")
        for rt in self.runtimes.values():  # the stages have stopped: nothing holds them
            rt.close()
        self._retired = []
        if self.pipeline:
            s = self.pipeline.stats
            j = self.journal
            log.info("stopped", parts_in=s.parts_in, verdicts=s.verdicts_total, overflows=s.overflows,
                     late_results=s.late_results, journaled=j.written if j else 0,
                     journal_dropped=j.dropped if j else 0, journal_quarantined=j.quarantined if j else 0,
                     journal_recovered=j.recovered if j else 0, journal_backlog=j.backlog if j else 0)
        if self.console:  # ends its live streams, so the server's shutdown is not held by them
            self.console.close()
        if self.metrics:  # last: the endpoint stays up while the parts in flight drain
            self.metrics.close()
