"""structlog setup: JSON lines (journald-friendly) written by a background thread, so logging never blocks a cycle."""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class QueueWriter:
    """File-like: `write` queues the line; a thread writes it out. When full, lines are dropped and counted."""

    def __init__(self, out: TextIO, maxsize: int = 10_000) -> None:
        self.out = out
        self.dropped = 0
        self._q: queue.Queue[str | None] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, text: str) -> int:
        try:
            self._q.put_nowait(text)
        except queue.Full:
            self.dropped += 1
        return len(text)

    def flush(self) -> None:
        return None

    def _run(self) -> None:
        while (text := self._q.get()) is not None:
            try:
                self.out.write(text)
                if self._q.empty():
                    self.out.flush()
            except (OSError, ValueError):  # stdout gone (journald restarted): keep going
                self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()


def setup_logging(level: str = "info", fmt: str = "json", out: TextIO | None = None) -> QueueWriter:
    """Configure structlog (and stdlib logging through it). Returns the writer so shutdown can flush it."""
    writer = QueueWriter(out or sys.stdout)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=writer),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=_LEVELS[level], stream=writer, format="%(levelname)s %(name)s %(message)s", force=True)
    return writer


class VerdictLogger:
    """A VerdictSink: one JSON event per verdict (seq, part id, verdict, reason, per-stage ms)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("inspectd.verdict")

    def submit(self, verdict, part=None) -> None:
        self._log.info("verdict", seq=verdict.seq, part_id=verdict.part_id, product=verdict.product,
                       verdict=verdict.outcome.value, reason=verdict.reason, score=round(verdict.score, 4),
                       latency_ms=round(verdict.latency_ms, 3),
                       stage_ms={k: round(v, 3) for k, v in verdict.stage_ms.items()}, truth=verdict.truth)
