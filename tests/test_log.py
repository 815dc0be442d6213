"""Logging: JSON lines that name their logger, third-party lines in the same format, dropped lines counted."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import threading

import pytest
import structlog

from inspectd.log import QueueWriter, is_journal_stream, setup_logging


@pytest.fixture
def logged(request):
    """setup_logging into a buffer; yields a function that closes the writer and returns the parsed lines."""
    buf = io.StringIO()
    root_level = logging.getLogger().level
    writer = setup_logging("info", "json", buf, queue_size=getattr(request, "param", 10_000))

    def lines() -> list[dict]:
        writer.close()
        return [json.loads(line) for line in buf.getvalue().splitlines()]

    yield lines
    writer.close()
    _undo_setup_logging(root_level)


def _undo_setup_logging(root_level: int) -> None:
    """What setup_logging changed in this process, back as it was (the writer already closed)."""
    logging.getLogger().handlers.clear()
    logging.getLogger().setLevel(root_level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_json_lines_name_their_logger_and_keep_levels(logged):
    structlog.get_logger("inspectd.test").info("hello", part_id=7)
    structlog.get_logger("inspectd.test").debug("below_the_level")
    with structlog.contextvars.bound_contextvars(seq=3):
        structlog.get_logger("inspectd.other").warning("bound")
    events = logged()
    assert [e["event"] for e in events] == ["hello", "bound"]
    assert events[0]["logger"] == "inspectd.test" and events[0]["level"] == "info" and events[0]["part_id"] == 7
    assert events[1]["logger"] == "inspectd.other" and events[1]["seq"] == 3 and "timestamp" in events[1]


def test_exceptions_are_one_json_line(logged):
    try:
        raise ValueError("bad part")
    except ValueError:
        structlog.get_logger("inspectd.test").exception("stage_error", seq=1)
    (event,) = logged()
    assert event["level"] == "error" and "ValueError: bad part" in event["exception"]


def test_pymodbus_lines_come_out_as_json(logged):
    """A real pymodbus client failing to connect logs through stdlib logging: the line must be JSON too."""
    from pymodbus.client import ModbusTcpClient

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ModbusTcpClient("127.0.0.1", port=port, retries=0, timeout=1)
    assert not client.connect()
    client.close()
    events = logged()
    assert any(e["logger"].startswith("pymodbus") and e["level"] == "error" and str(port) in e["event"]
               for e in events), events


def test_stdlib_extra_fields_are_kept(logged):
    logging.getLogger("inspectd.test.thirdparty").warning("device %s gone", "cam0", extra={"serial": "A1"})
    (event,) = logged()
    assert event == {**event, "event": "device cam0 gone", "logger": "inspectd.test.thirdparty", "serial": "A1"}


def test_harvesters_lines_come_out_as_json(logged):
    """The real harvesters gives its loggers their own plain-text handler and propagate=False; once the GenICam
    device layer is imported, their lines still come out as JSON through our handler, and nothing else."""
    from tests.genicam.provision import harvesters_importable

    harvesters_importable()
    import harvesters.core

    import inspectd.camera.genicam_device as dev

    harvesters.core.Harvester().reset()  # makes its loggers the way a station does
    dev.adopt_loggers("harvesters")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        logging.getLogger("harvesters.core").warning("device %s gone", "cam0")
    events = logged()
    assert [e["event"] for e in events if e["logger"] == "harvesters.core"] == ["device cam0 gone"]
    assert err.getvalue() == ""  # no plain-text copy on stderr


class _Stuck(io.StringIO):
    """An output that blocks its first write until released, so the queue behind it fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        assert self.release.wait(30)
        return super().write(s)


def test_full_queue_drops_and_counts_instead_of_blocking():
    out = _Stuck()
    writer = QueueWriter(out, maxsize=2)
    writer.write("first\n")
    assert out.entered.wait(30)  # the writer thread holds "first" inside the stuck write
    for i in range(5):
        writer.write(f"line {i}\n")  # returns at once: 2 fit in the queue, 3 are dropped
    assert writer.dropped == 3
    out.release.set()
    writer.close()
    assert out.getvalue() == "first\nline 0\nline 1\n"


@pytest.mark.parametrize("logged", [5], indirect=True)  # a log queue of 5 lines
def test_drops_are_reported_as_a_log_line_and_a_metric(logged):
    """A burst the writer cannot keep up with: the lost lines are counted, told in the log and exported."""
    from inspectd.log import QueueHandler, dropped_lines
    from inspectd.metrics import Metrics

    writer = next(h.writer for h in logging.getLogger().handlers if isinstance(h, QueueHandler))
    out = _Stuck()
    writer.out = out  # the real writer thread now blocks on its next line
    log = structlog.get_logger("inspectd.test")
    log.info("first")
    assert out.entered.wait(30)
    for i in range(5 + 7):
        log.info("burst", i=i)
    assert writer.dropped == 7 and dropped_lines() == 7
    metrics = Metrics(0.05)
    assert b"inspectd_log_lines_dropped_total 7.0" in metrics.exposition()
    out.release.set()
    writer.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    report = [e for e in lines if e["event"] == "log_lines_dropped"]
    assert len(report) == 1 and report[0]["dropped_total"] == 7 and report[0]["level"] == "warning"
    assert [e["i"] for e in lines if e["event"] == "burst"] == list(range(5))


def test_lines_to_journald_carry_their_syslog_priority(tmp_path, monkeypatch):
    """systemd names the journal stream in JOURNAL_STREAM (dev:inode of our stdout): then every line starts with
    its sd-daemon priority, which journald stores as PRIORITY (`journalctl -p err` shows reload_rejected)."""
    out = (tmp_path / "stream").open("w")
    st = os.fstat(out.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    root_level = logging.getLogger().level
    writer = setup_logging("debug", "json", out)
    try:
        structlog.get_logger("inspectd.daemon").error("reload_rejected", problems=["x"])
        structlog.get_logger("inspectd.archive").warning("archive_slow")
        structlog.get_logger("inspectd.daemon").info("ready")
        structlog.get_logger("inspectd.daemon").debug("detail")
        logging.getLogger("pymodbus").critical("library line")
    finally:
        writer.close()
        out.close()
        _undo_setup_logging(root_level)
    lines = (tmp_path / "stream").read_text().splitlines()
    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>", "<7>", "<2>"]
    assert json.loads(lines[0][3:])["event"] == "reload_rejected"
    other = io.StringIO()  # not the journal stream (a pipe, a file, a terminal): plain JSON lines
    assert not is_journal_stream(other, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    with (tmp_path / "other").open("w") as f:
        assert not is_journal_stream(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not is_journal_stream(f, {})
