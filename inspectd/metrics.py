"""Prometheus metrics and the HTTP server for /metrics, /healthz and /readyz.

One CollectorRegistry per daemon (never the process-wide default): two daemons in one test process
must not share counters. The hot path touches this module only through `submit` (a put_nowait on a
bounded queue; a worker observes the histograms) and `observe_plc_write`. Counters are read at scrape
time from the pipeline's own PipelineStats, so they equal the verdicts issued exactly, with no second
bookkeeping that could drift from the journal.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from inspectd.camera.base import CountsAcquisition
from inspectd.camera.genicam_stats import AcquisitionStats
from inspectd.log import dropped_lines
from inspectd.plc.link import NoPlcLink
from inspectd.sensors import HostSensors
from inspectd.supervise.liveness import Liveness
from inspectd.types import STAGE_TIMES, Part, Verdict

if TYPE_CHECKING:  # annotations only: the daemon imports this module and builds all of these
    from inspectd.archive import Archive
    from inspectd.camera.base import Source
    from inspectd.journal import Journal
    from inspectd.pipeline.pipeline import Pipeline
    from inspectd.pipeline.runtime import ProductRuntime
    from inspectd.plc.link import PlcLink

log = structlog.get_logger("inspectd.metrics")

# Verdict.stage_ms keys -> the stage label operators see. The decide stage times
# postprocess and decide together (one thread, one stamp), so its label says so.
STAGE_LABELS = dict(zip(STAGE_TIMES, ("grab", "preprocess", "infer", "postprocess_decide"), strict=True))
PLC_WRITE = "plc_write"
# PLC link counters (inspectd.plc.link.LinkStats) exported as they are.
PLC_COUNTERS = {
    "reconnects": "PLC sessions lost after being up",
    "connect_failures": "failed PLC connection attempts",
    "write_errors": "failed or timed-out PLC requests",
    "missed_triggers": "triggers refused while not ready",
    "overruns": "results dropped because the PLC result buffer was full",
    "comm_lost": "times the PLC heartbeat watchdog fired",
    "published": "verdicts shown to the PLC",
    "connections_dropped": "Modbus server: client connections dropped (over max_connections or out of descriptors)",
    "connections_refused": "Modbus server: clients refused by the allow list",
    "accept_errors": "Modbus server: failed accepts (out of descriptors or memory)",
    "protocol_errors": "Modbus server: unknown unit ids, exception answers, garbage frames, unread answers",
}


def latency_buckets(budget_s: float) -> tuple[float, ...]:
    """Histogram bounds in seconds, derived from the cycle budget.

    Prometheus interpolates linearly inside a bucket, so a quantile is only as good as the bucket it
    falls in. Stages take a small share of the budget (geometric steps of 25 % from budget/500 up to
    half the budget); the cycle's p99/p99.9 sit near the budget (linear steps of 2.5 % of the budget
    from 50 % to 120 %, i.e. 1.25 ms at 50 ms); overruns need only coarse bounds (1.5x .. 10x).
    """
    bounds: set[float] = set()
    x = budget_s / 500
    while x < budget_s * 0.5:
        bounds.add(x)
        x *= 1.25
    bounds.update(budget_s * 0.025 * i for i in range(20, 49))
    bounds.update(budget_s * f for f in (1.5, 2.0, 3.0, 5.0, 10.0))
    return tuple(sorted({float(f"{b:.6g}") for b in bounds}))


class HttpApp(Protocol):
    """More paths on the same server (the technician console): True when it answered the request."""

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> bool: ...


class StationState(Protocol):
    """What metrics and /readyz read from the daemon, and nothing more. The daemon provides it; this module
    never imports the daemon (the daemon imports it). Each part is None until the daemon has built it."""

    @property
    def pipeline(self) -> Pipeline | None: ...

    @property
    def source(self) -> Source | None: ...

    @property
    def plc(self) -> PlcLink | None: ...

    @property
    def runtimes(self) -> Mapping[str, ProductRuntime]: ...

    @property
    def journal(self) -> Journal | None: ...

    @property
    def archive(self) -> Archive | None: ...

    @property
    def liveness(self) -> Liveness: ...

    @property
    def reloads(self) -> Mapping[str, int]: ...  # {"applied": n, "rejected": n}


def configured_plc(daemon: StationState) -> PlcLink | None:
    """The daemon's PLC link, or None when there is none (`plc: {type: none}` gives a NoPlcLink)."""
    plc = daemon.plc
    return None if plc is None or isinstance(plc, NoPlcLink) else plc


def pipeline_running(pipeline: Pipeline | None) -> bool:
    """Every stage thread is alive: a stage that died (or never started) cannot turn parts into verdicts."""
    return pipeline is not None and all(t.is_alive() for t in (pipeline.acquire, *pipeline.workers))


def readiness(daemon: StationState) -> dict[str, bool]:
    """/readyz checks, each able to fail on its own."""
    pipeline, source, journal = daemon.pipeline, daemon.source, daemon.journal
    plc = configured_plc(daemon)
    return {
        "camera": bool(source is not None and source.connected),
        # The active model is loaded and the stage threads that run it are alive.
        "backend": bool(pipeline_running(pipeline) and pipeline is not None and pipeline.active.backend.model_sha256),
        # Daemon._build_runtimes raises when a golden check fails, so runtimes exist only once all passed.
        "golden": bool(daemon.runtimes),
        "plc": plc is None or bool(plc.connected),  # no PLC configured counts as up
        "journal": journal is None or bool(journal.healthy),  # verdicts can be recorded
    }


class DaemonCollector(Collector):
    """Reads the daemon's live state at scrape time: counters, queue depths, connections, identity."""

    def __init__(self, daemon: StationState) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        pipeline = d.pipeline
        if pipeline is not None:
            yield from self._pipeline(pipeline)
        source = d.source
        if isinstance(source, CountsAcquisition):
            yield from camera_counters(source.stats)
        yield _gauge("inspectd_camera_connected", "1 while the camera delivers frames",
                     float(bool(source is not None and source.connected)))
        plc = configured_plc(d)
        yield _gauge("inspectd_plc_configured", "1 when a PLC transport is configured", float(plc is not None))
        if plc is not None:
            yield _gauge("inspectd_plc_connected", "1 while the PLC connection is up", float(bool(plc.connected)))
            for name, doc in PLC_COUNTERS.items():
                if hasattr(plc.stats, name):
                    yield _counter(f"inspectd_plc_{name}", doc, getattr(plc.stats, name))
        checks = readiness(d)
        ready = GaugeMetricFamily("inspectd_ready_check", "readiness checks (/readyz), 1 = ok", labels=["check"])
        for name, ok in checks.items():
            ready.add_metric([name], float(ok))
        yield ready
        fam = CounterMetricFamily("inspectd_reloads", "configuration reloads (SIGHUP) by result; a rejected one "
                                  "leaves the previous configuration running", labels=["result"])
        for result, n in sorted(dict(d.reloads).items()):
            fam.add_metric([result], n)
        yield fam
        journal = d.journal
        if journal is not None:
            yield _counter("inspectd_journal_written", "verdict rows written to the journal", journal.written)
            yield _counter("inspectd_journal_dropped", "verdicts the journal could not keep", journal.dropped)
            yield _counter("inspectd_journal_errors", "failed journal writes (each retried)", journal.errors)
            yield _gauge("inspectd_journal_pending", "verdicts waiting for the journal writer", journal.pending)
            yield _counter("inspectd_journal_pruned_rows", "rows deleted by retention", journal.pruned)
            yield _gauge("inspectd_journal_healthy", "1 while verdicts are being journaled", float(journal.healthy))
            yield _gauge("inspectd_journal_backlog", "rows waiting for a failing write to be retried",
                         journal.backlog)
            lost = CounterMetricFamily("inspectd_journal_lost", "verdicts not journaled, by reason", labels=["reason"])
            for reason in ("queue_full", "backlog_full", "unstorable", "unwritten_at_stop"):
                lost.add_metric([reason], journal.dropped_by.get(reason, 0))
            yield lost
            yield _counter("inspectd_journal_quarantined", "rows SQLite refused, kept in the quarantine table",
                           journal.quarantined)
            yield _counter("inspectd_journal_recovered", "verdicts journaled from the ahead log", journal.recovered)
            yield _counter("inspectd_journal_interrupted", "accepted parts found without a verdict at start "
                           "(fail-safe interrupted rows)", journal.interrupted)
            yield _counter("inspectd_journal_ahead_errors", "failed ahead-log appends", journal.ahead.errors)
        archive = d.archive
        if archive is not None:
            yield from archive.collect()

    def _pipeline(self, p: Pipeline) -> Iterator[Metric]:
        s = p.stats
        parts = CounterMetricFamily("inspectd_parts", "verdicts issued, by product and verdict",
                                    labels=["product", "verdict"])
        for (product, outcome), n in sorted(dict(s.verdicts).items()):  # dict(): atomic copy under the GIL
            parts.add_metric([product, outcome], n)
        yield parts
        reasons = CounterMetricFamily("inspectd_failsafes", "fail-safe verdicts by reason", labels=["reason"])
        for reason, n in sorted(dict(s.failsafe_reasons).items()):
            reasons.add_metric([reason], n)
        yield reasons
        yield _counter("inspectd_deadline_misses", "parts whose verdict was not ready within the cycle budget",
                       s.failsafe_reasons.get("deadline", 0))
        yield _counter("inspectd_overflows", "parts the camera delivered faster than the pipeline took them",
                       s.overflows)
        yield _counter("inspectd_late_results", "real results that arrived after their fail-safe verdict",
                       s.late_results)
        yield _counter("inspectd_stage_errors", "exceptions raised by a stage (part failed safe)", s.stage_errors)
        yield _counter("inspectd_sink_errors", "exceptions raised by a verdict sink", s.sink_errors)
        yield _counter("inspectd_parts_in", "parts admitted into the pipeline", s.parts_in)
        yield _counter("inspectd_keep_warm_runs", "dummy inferences run after a pause (watchdog.keep_warm_s)",
                       p.infer.warmups)
        yield _counter("inspectd_keep_warm_failures", "keep-warm inferences that raised: the model or its device "
                       "failed with no part at stake", p.infer.warmup_failures)
        depths = GaugeMetricFamily("inspectd_queue_depth", "parts waiting in front of a stage", labels=["queue"])
        for name, n in p.queue_depths().items():
            depths.add_metric([name], n)
        yield depths
        if s.last_verdict_t:
            yield _gauge("inspectd_last_verdict_age_seconds", "time since the last verdict",
                         time.monotonic() - s.last_verdict_t)
        rt = p.active
        described = {k: str(v) for k, v in rt.backend.describe().items()}
        info = InfoMetricFamily("inspectd_model", "active product's backend and model identity",
                                labels=["product", *sorted(described)])
        info.add_metric([rt.name, *(described[k] for k in sorted(described))], {})
        yield info


CAMERA_COUNTERS = {
    "frames": "frames the camera delivered to the pipeline",
    "triggers": "software triggers sent to the camera",
    "timeouts": "grabs that got no frame within their timeout",
    "missed": "frames the camera numbered but the host never got (frame id gaps)",
    "extra": "frames discarded: no trigger was waiting for them",
    "losses": "times the camera was declared lost",
    "reconnects": "reconnections after a loss",
    "reconnect_failures": "failed reconnection attempts",
    "feature_errors": "camera feature writes that failed or did not read back",
    "pool_full": "frames copied into fresh memory because every frame-pool slot was still held",
    "pool_misfit": "frames copied into fresh memory because they were larger than a frame-pool slot",
}


def camera_counters(stats: AcquisitionStats) -> Iterator[Metric]:
    for name, doc in CAMERA_COUNTERS.items():
        yield _counter(f"inspectd_camera_{name}", doc, getattr(stats, name))


class SensorCollector(Collector):
    """Exports the poller's last readings; a scrape never waits for sysfs or nvidia-smi."""

    def __init__(self, sensors: HostSensors) -> None:
        self.sensors = sensors

    def collect(self) -> Iterator[Metric]:
        r = self.sensors.latest
        temp = GaugeMetricFamily("inspectd_temperature_celsius", "host temperatures (thermal zones, GPUs)",
                                 labels=["sensor"])
        for name, value in sorted(r.temperature_c.items()):
            temp.add_metric([name], value)
        yield temp
        clock = GaugeMetricFamily("inspectd_clock_hz", "CPU/GPU clocks", labels=["device"])
        for name, value in sorted(r.clock_hz.items()):
            clock.add_metric([name], value)
        yield clock
        yield _counter("inspectd_sensor_polls", "host sensor polls done", self.sensors.polls)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


_STOP = object()
GATHER_S = 0.02  # the worker lets verdicts gather this long once its queue is empty


class Metrics:
    """A VerdictSink that feeds the latency histograms, plus the registry the HTTP server exposes."""

    def __init__(self, budget_s: float, *, collectors: list[Collector] | None = None,
                 ready: Callable[[], Mapping[str, bool]] = dict, sensors: HostSensors | None = None,
                 liveness: Liveness | None = None, queue_size: int = 10_000, cache_s: float = 0.0) -> None:
        self.registry = CollectorRegistry()
        self.ready = ready
        self.liveness = liveness  # the main loop's heartbeat: /healthz answers 503 when it is overdue
        self.sensors = sensors
        self.dropped = 0
        self.started = time.monotonic()
        buckets = latency_buckets(budget_s)
        self.stage_seconds = Histogram("inspectd_stage_seconds", "time per pipeline stage and PLC write",
                                       ["stage"], buckets=buckets, registry=self.registry)
        self.cycle_seconds = Histogram("inspectd_cycle_seconds", "trigger to verdict, per product",
                                       ["product"], buckets=buckets, registry=self.registry)
        self._stages = {k: self.stage_seconds.labels(v) for k, v in STAGE_LABELS.items()}
        self._plc_write = self.stage_seconds.labels(PLC_WRITE)
        Gauge("inspectd_cycle_budget_seconds", "configured trigger-to-verdict budget",
              registry=self.registry).set(budget_s)
        for c in collectors or []:
            self.registry.register(c)
        if sensors is not None:
            self.registry.register(SensorCollector(sensors))
        self.registry.register(_SelfCollector(self))
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self.server: HealthServer | None = None
        self._render = threading.Condition()  # single flight: concurrent scrapes share one render
        self._rendering = False
        self._rendered = 0
        self._last: bytes = b""
        self._last_t = -1e9
        self.cache_s = cache_s  # metrics.cache_s: a render is served this long
        self.renders = 0

    @classmethod
    def for_daemon(cls, daemon: StationState, budget_s: float, cache_s: float = 0.0) -> Metrics:
        return cls(budget_s, collectors=[DaemonCollector(daemon)], ready=lambda: readiness(daemon),
                   sensors=HostSensors(), liveness=daemon.liveness, cache_s=cache_s)

    # -- hot path -------------------------------------------------------------------------------
    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        try:
            self._q.put_nowait((verdict.product, verdict.latency_ms, verdict.stage_ms))
        except queue.Full:
            self.dropped += 1

    def observe_plc_write(self, seconds: float) -> None:
        """For the PLC transport: time of one verdict write (a histogram observe: lock + bisect, microseconds)."""
        self._plc_write.observe(seconds)

    @property
    def pending(self) -> int:
        return self._q.qsize()

    # -- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while (item := self._q.get()) is not _STOP:
            product, latency_ms, stage_ms = item
            self.cycle_seconds.labels(product).observe(latency_ms / 1e3)
            for stage, ms in stage_ms.items():
                child = self._stages.get(stage)
                if child is not None:
                    child.observe(ms / 1e3)
            if self._q.empty():  # let verdicts gather: one wake-up per batch, not per part (scrapes are seconds apart)
                time.sleep(GATHER_S)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, address: str | None = None, port: int | None = None, app: HttpApp | None = None) -> None:
        """Start the worker and sensors; serve HTTP when an address is given. A bind failure is logged,
        not raised: the line keeps inspecting without its metrics endpoint."""
        self._thread.start()
        if self.sensors is not None:
            self.sensors.start()
        if address is not None and port is not None:
            server = HealthServer(self, address, port, app)
            try:
                server.start()
            except OSError as e:
                log.error("metrics_server_failed", address=address, port=port, error=str(e))
                return
            self.server = server
            log.info("metrics_listening", address=address, port=server.port)

    def close(self, timeout: float = 5.0) -> None:
        if self.server is not None:
            self.server.stop()
        if self.sensors is not None:
            self.sensors.stop()
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: 200 while the main loop turns (or without one to watch), 503 once it is overdue."""
        body: dict[str, Any] = {"status": "alive", "pid": os.getpid(),
                                "uptime_s": round(time.monotonic() - self.started, 3)}
        if self.liveness is None:
            return 200, body
        loop = self.liveness.check()
        body.update(loop_age_s=round(loop.age_s, 3), loop_limit_s=round(loop.limit_s, 3))
        if loop.overdue:
            body["status"] = "overdue"
            return 503, body
        return 200, body

    def exposition(self) -> bytes:
        """Prometheus text. A scrape that arrives while another is being rendered gets that render (it began
        at most one render's time before): fifty scrapers cost about one render at a time, not fifty."""
        with self._render:
            if self.cache_s and time.monotonic() - self._last_t < self.cache_s:
                return self._last
            if self._rendering:
                seen = self._rendered
                self._render.wait_for(lambda: self._rendered != seen or not self._rendering, timeout=10.0)
                if self._rendered != seen:
                    return self._last
            self._rendering = True  # (the other render failed or hung: render ourselves)
        data = b""
        try:
            data = generate_latest(self.registry)
            return data
        finally:
            with self._render:
                self._rendering = False
                if data:
                    self._last, self._last_t = data, time.monotonic()
                    self._rendered += 1
                    self.renders += 1
                self._render.notify_all()


class _SelfCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield _counter("inspectd_metrics_dropped", "verdicts not observed: metrics queue full", self.metrics.dropped)
        yield _counter("inspectd_log_lines_dropped", "log lines lost: log queue full or stdout gone", dropped_lines())
        if self.metrics.liveness is not None:
            yield _gauge("inspectd_main_loop_age_seconds", "time since the daemon's main loop last turned "
                         "(/healthz fails when overdue)", self.metrics.liveness.check().age_s)


class HealthServer:
    """HTTP on its own threads: /metrics (Prometheus text), /healthz (200 alive / 503 main loop overdue),
    /readyz (200 ready / 503 not)."""

    def __init__(self, metrics: Metrics, address: str, port: int, app: HttpApp | None = None) -> None:
        self.metrics = metrics
        self.app = app
        self.address = address
        self.requested_port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        metrics, app = self.metrics, self.app

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0  # a client that stalls mid-request frees its thread

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    code, body = metrics.health()
                    self._json(code, body)
                elif path == "/readyz":
                    checks = dict(metrics.ready())
                    ok = bool(checks) and all(checks.values())
                    self._json(200 if ok else 503, {"ready": ok, "checks": checks})
                elif app is None or not app.handle(self, "GET"):
                    self._json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

            def do_POST(self) -> None:
                if app is None or not app.handle(self, "POST"):
                    self._json(404, {"error": "not found"})

            def _json(self, code: int, body: dict) -> None:
                self._send(code, json.dumps(body).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # scrapes every few seconds would flood the journal

        httpd = ThreadingHTTPServer((self.address, self.requested_port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
