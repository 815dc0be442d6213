"""The per-verdict log line (log.every_part) is rendered directly by setup_logging's handler, with the same
processors and renderer as any structlog call but without the stdlib record machinery: the line must be the one a
structlog call gives, in every format, with the journald priority prefix, at every level setting."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest
import structlog
from structlog.testing import capture_logs

from inspectd.log import QueueHandler, VerdictLogger, setup_logging
from inspectd.types import Outcome, Verdict
from tests.test_log import _undo_setup_logging

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")


def verdict() -> Verdict:
    now = time.monotonic()
    return Verdict(seq=7, part_id=70, product="disc-a", outcome=Outcome.REJECT, reason="defect", result_code=1,
                   plc_ok=False, score=0.123456, scores={"good": 0.88, "defect": 0.12}, t_trigger=now,
                   t_verdict=now + 0.0021, truth="reject", model_sha256="ab" * 32,
                   stage_ms={"grab": 0.01, "preprocess": 0.3, "infer": 1.3, "decide": 0.05}, wall_time=time.time())


def both_lines(fmt: str, level: str = "info", prefix: bool = False) -> tuple[list[str], list[str]]:
    """(what VerdictLogger wrote, what the same event through structlog writes), timestamps blanked."""
    out: list[list[str]] = []
    root_level = logging.getLogger().level
    for direct in (True, False):
        buf = io.StringIO()
        writer = setup_logging(level, fmt, out=buf)
        handler = next(h for h in logging.getLogger().handlers if isinstance(h, QueueHandler))
        handler.priority_prefix = prefix
        vl = VerdictLogger()
        if not direct:
            vl._direct = None  # the structlog path, as without setup_logging's handler
        vl.submit(verdict())
        writer.close()
        out.append([STAMP.sub("T", line) for line in buf.getvalue().splitlines()])
    _undo_setup_logging(root_level)
    return out[0], out[1]


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("prefix", [False, True])
def test_the_direct_verdict_line_is_the_structlog_line(fmt: str, prefix: bool) -> None:
    direct, via_structlog = both_lines(fmt, prefix=prefix)
    assert len(direct) == 1 and direct == via_structlog
    assert "verdict" in direct[0] and "inspectd.verdict" in direct[0]
    assert direct[0].startswith("<6>") == prefix  # info: sd-daemon priority 6


def test_no_verdict_line_above_info() -> None:
    assert both_lines("json", level="warning") == ([], [])


def test_a_test_capturing_events_still_sees_the_verdict() -> None:
    root_level = logging.getLogger().level
    writer = setup_logging("info", out=io.StringIO())
    vl = VerdictLogger()
    try:
        with capture_logs() as events:
            vl.submit(verdict())
        assert structlog.get_config()["processors"][-1] is structlog.stdlib.ProcessorFormatter.wrap_for_formatter
    finally:
        writer.close()
        _undo_setup_logging(root_level)
    assert [e["event"] for e in events] == ["verdict"] and events[0]["part_id"] == 70


def test_another_root_handler_gets_the_verdict_record() -> None:
    """The direct line is for setup_logging's handler alone: with another handler on the root, the verdict goes
    through stdlib logging, so that handler gets its record too."""
    root_level = logging.getLogger().level
    buf = io.StringIO()
    writer = setup_logging("info", out=buf)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    extra = Keep()
    logging.getLogger().addHandler(extra)
    try:
        VerdictLogger().submit(verdict())
    finally:
        logging.getLogger().removeHandler(extra)
        writer.close()
        _undo_setup_logging(root_level)
    assert len(records) == 1 and records[0].name == "inspectd.verdict"
    assert '"event": "verdict"' in buf.getvalue()
