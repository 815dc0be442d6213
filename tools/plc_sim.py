"""PLC simulator: plays the line PLC's side of the inspectd handshake and checks every part gets its result.

The simulated PLC program is a client of the shared registers: of the daemon itself (Modbus server
mode) or of the PLC's own server that the daemon also talks to (Modbus client mode: a Modbus server;
S7 mode: an S7 server's DB). Per part it writes PART_ID, raises TRIGGER, drops it on TRIGGER_ACK,
latches each new result (RESULT_SEQ changed + RESULT_VALID), checks RESULT_PART_ID, and acknowledges.

  # against a running daemon (configs/demo/station-plc.yaml serves 127.0.0.1:5020)
  python tools/plc_sim.py modbus --port 5020 --parts 200
  # the PLC side of an S7 DB that a daemon in s7 mode writes into
  python tools/plc_sim.py s7 --port 102 --db 100 --parts 200
  # figures: verdict ready -> visible at the PLC, p50/p99, with a stand-in daemon (real PlcLink,
  # instant random verdicts) in a second process; modbus_client/s7 need the peers tests/plc builds
  python tools/plc_sim.py bench --transport modbus_server --parts 2000

Latency: `trigger->result` is what the PLC sees end to end (includes inspection). With `bench`, the
stand-in daemon records when each verdict was handed to the link (CLOCK_MONOTONIC is system-wide),
giving `ready->visible`: handed over -> read back by the PLC (includes the PLC's own poll period).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from inspectd.plc.config import LayoutConfig  # noqa: E402
from inspectd.plc.layout import B_WORDS, Layout, PlcInputs, bytes_to_words, words_to_bytes  # noqa: E402

# ----------------------------------------------------------------------------- PLC-side register access


class PlcIO(Protocol):
    def read_b(self) -> list[int]: ...
    def write_a(self, words: list[int]) -> None: ...
    def close(self) -> None: ...


class ModbusPlcIO:
    """pymodbus' own sync client: FC03 for block B, FC16 for block A."""

    def __init__(self, host: str, port: int, layout: LayoutConfig, unit: int = 1, timeout: float = 1.0) -> None:
        from pymodbus.client import ModbusTcpClient

        self.c = ModbusTcpClient(host, port=port, timeout=timeout, retries=0)
        self.lay, self.unit = layout, unit

    def read_b(self) -> list[int]:
        rr = self.c.read_holding_registers(self.lay.block_b, count=B_WORDS, device_id=self.unit)
        if rr.isError():
            raise ConnectionError(str(rr))
        return list(rr.registers)

    def write_a(self, words: list[int]) -> None:
        rr = self.c.write_registers(self.lay.block_a, words, device_id=self.unit)
        if rr.isError():
            raise ConnectionError(str(rr))

    def close(self) -> None:
        self.c.close()


class S7PlcIO:
    """python-snap7's sync client on the PLC's DB (the PLC program's own view of it); reconnects after errors."""

    def __init__(self, host: str, port: int, layout: LayoutConfig, db: int = 100) -> None:
        import snap7

        self.c = snap7.Client()
        self.addr, self.lay, self.db = (host, port), layout, db
        self._up = False

    def _client(self):  # type: ignore[no-untyped-def]
        if not self._up:
            self.c.disconnect()
            self.c.connect(self.addr[0], 0, 1, tcp_port=self.addr[1])
            self._up = True
        return self.c

    def read_b(self) -> list[int]:
        try:
            return bytes_to_words(self._client().db_read(self.db, 2 * self.lay.block_b, 2 * B_WORDS))
        except Exception:
            self._up = False
            raise

    def write_a(self, words: list[int]) -> None:
        try:
            self._client().db_write(self.db, 2 * self.lay.block_a, words_to_bytes(words))
        except Exception:
            self._up = False
            raise

    def close(self) -> None:
        self.c.disconnect()


# ----------------------------------------------------------------------------- the PLC program


@dataclass
class SimReport:
    triggered: list[int] = field(default_factory=list)  # part ids in trigger order
    results: dict[int, tuple[bool, int]] = field(default_factory=dict)  # part id -> (ok, code)
    order: list[int] = field(default_factory=list)  # part ids in the order results were seen
    t_trigger: dict[int, float] = field(default_factory=dict)
    t_seen: dict[int, float] = field(default_factory=dict)
    missed_seen: int = 0  # MISSED_TRIGGER rising edges
    overrun_seen: int = 0  # OVERRUN rising edges
    recipe: dict[int, bool] = field(default_factory=dict)  # recipe no -> acked
    io_errors: int = 0
    seq_gaps: int = 0  # RESULT_SEQ jumped by more than 1: a result shown and replaced unseen

    @property
    def missing(self) -> list[int]:
        return [p for p in self.triggered if p not in self.results]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class PlcSim:
    """One PLC scan per loop: read block B, decide, write block A when it changed, heartbeat every 100 ms."""

    def __init__(self, io: PlcIO, layout: LayoutConfig | None = None, *, seed: int = 1, first_part: int = 1,
                 ack_delay_s: tuple[float, float] = (0.0, 0.0), recipes: dict[int, int] | None = None,
                 scan_s: float = 0.0005, hb_period_s: float = 0.1, period_s: float = 0.0) -> None:
        self.io, self.lay = io, Layout(layout)
        self.rng = random.Random(seed)
        self.next_part = first_part
        self.ack_delay = ack_delay_s
        self.recipes = dict(recipes or {})  # before the k-th trigger (0-based), load this recipe
        self.scan, self.hb_period = scan_s, hb_period_s
        self.period = period_s  # least time between two triggers (the line's part pitch)
        self.report = SimReport()
        self.pause_ack = threading.Event()  # set: hold results unacknowledged (to force an overrun)
        self.stop = threading.Event()

    def run(self, parts: int, timeout_s: float = 60.0, settle_s: float = 2.0) -> SimReport:
        rep, lay = self.report, self.lay
        a = PlcInputs(trigger_enable=True)
        written: list[int] | None = None
        last_seq, ack_at, phase = 0, None, "idle"
        prev_missed = prev_overrun = False
        recipe_no, hb, hb_t, t_last_trigger = 0, 0, 0.0, 0.0
        t_end = time.monotonic() + timeout_s
        t_done: float | None = None
        while not self.stop.is_set() and (now := time.monotonic()) < t_end:
            if now - hb_t >= self.hb_period:
                hb, hb_t = (hb + 1) & 0xFFFF, now
            try:
                b = lay.decode_b(self.io.read_b())
            except Exception:
                rep.io_errors += 1
                written = None
                time.sleep(0.05)
                continue
            t_read = time.monotonic()
            rep.missed_seen += b.missed_trigger and not prev_missed
            rep.overrun_seen += b.overrun and not prev_overrun
            prev_missed, prev_overrun = b.missed_trigger, b.overrun
            # results: latch each new one, acknowledge after the configured delay
            if b.result_valid and b.result_seq != last_seq:
                if last_seq and (b.result_seq - last_seq) % 0xFFFF not in (1,):
                    rep.seq_gaps += 1
                last_seq = b.result_seq
                rep.results[b.result_part_id] = (b.result_ok, b.result_code)
                rep.order.append(b.result_part_id)
                rep.t_seen.setdefault(b.result_part_id, t_read)
                ack_at = now + self.rng.uniform(*self.ack_delay)
            # ACK is a level: "the shown result is one I latched" -- also a result shown again with the same
            # RESULT_SEQ after the daemon reconnected (block B is rewritten whole then)
            if (b.result_valid and b.result_seq == last_seq and not a.result_ack and not self.pause_ack.is_set()
                    and (ack_at is None or now >= ack_at)):
                a, ack_at = _with(a, result_ack=True), None
            elif a.result_ack and not b.result_valid:
                a = _with(a, result_ack=False)
            a = _with(a, clear_error=(b.missed_trigger or b.overrun) and not a.clear_error)
            # trigger / recipe phases
            k = len(rep.triggered)
            if phase == "idle" and k < parts:
                if k in self.recipes and self.recipes[k] != recipe_no:
                    recipe_no = self.recipes.pop(k)
                    a, phase = _with(a, load_recipe=True, recipe_no=recipe_no), "recipe"
                elif b.ready and not b.trigger_ack and now - t_last_trigger >= self.period:
                    pid, self.next_part = self.next_part, self.next_part + 1
                    a, phase = _with(a, trigger=True, part_id=pid), "trig"
                    rep.triggered.append(pid)
                    rep.t_trigger[pid] = t_last_trigger = time.monotonic()
            elif phase == "trig" and (b.trigger_ack or b.missed_trigger):
                a, phase = _with(a, trigger=False), "idle"
            elif phase == "recipe" and (b.recipe_ack or b.recipe_fail):
                rep.recipe[recipe_no] = b.recipe_ack and b.active_recipe == recipe_no
                a, phase = _with(a, load_recipe=False), "idle"
            a = _with(a, plc_heartbeat=hb)
            words = lay.encode_a(a)
            if words != written:
                try:
                    self.io.write_a(words)
                    written = words
                except Exception:
                    rep.io_errors += 1
                    written = None
            if k >= parts and phase == "idle":
                if not rep.missing or (t_done is not None and now - t_done > settle_s):
                    break
                t_done = t_done or now
            time.sleep(self.scan)
        return rep


def _with(a: PlcInputs, **kw: object) -> PlcInputs:
    from dataclasses import replace

    return replace(a, **kw)


# ----------------------------------------------------------------------------- stand-in daemon


class Responder:
    """Plays the pipeline: answers each PLC trigger with a random verdict after `inspect_s`."""

    def __init__(self, link: object, *, seed: int = 2, reject_rate: float = 0.3,
                 inspect_s: tuple[float, float] = (0.0, 0.0)) -> None:
        self.link = link
        self.rng = random.Random(seed)
        self.reject_rate, self.inspect_s = reject_rate, inspect_s
        self.t_ready: dict[int, float] = {}
        self.sent: dict[int, tuple[bool, int]] = {}
        self.seq = 0
        self.max_submit_s = 0.0  # the pipeline's view: how long handing a verdict to the link took
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="responder", daemon=True)

    def start(self) -> Responder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def verdict(self, part_id: int, t_trigger: float, ok: bool | None = None):  # -> Verdict
        from inspectd.types import Outcome, Verdict

        if ok is None:
            ok = self.rng.random() >= self.reject_rate
        self.seq += 1
        code = 0 if ok else self.rng.randint(1, 5)
        now = time.monotonic()
        self.sent[part_id] = (ok, code)
        self.t_ready[part_id] = now
        return Verdict(seq=self.seq, part_id=part_id, product="sim", outcome=Outcome.PASS if ok else Outcome.REJECT,
                       reason="" if ok else "sim_defect", result_code=code, plc_ok=ok, score=self.rng.random(),
                       scores={}, t_trigger=t_trigger, t_verdict=now, truth=None, model_sha256="", stage_ms={},
                       wall_time=time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            trig = self.link.next_trigger(0.05)  # type: ignore[attr-defined]
            if trig is None:
                continue
            if self.inspect_s[1] > 0:
                time.sleep(self.rng.uniform(*self.inspect_s))
            self.submit(self.verdict(trig.part_id, trig.t_trigger))

    def submit(self, verdict) -> None:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        self.link.submit(verdict, None)  # type: ignore[attr-defined]
        self.max_submit_s = max(self.max_submit_s, time.perf_counter() - t0)


def _standin(args: argparse.Namespace) -> None:
    """A stand-in daemon: the real PlcLink from a JSON `plc:` config, verdicts from a Responder."""
    import logging

    import structlog
    from pydantic import TypeAdapter

    from inspectd.plc.config import PlcConfig
    from inspectd.plc.registry import make_plc_link

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = TypeAdapter(PlcConfig).validate_python(json.loads(args.plc))
    link = make_plc_link(cfg, on_recipe=lambda n: True)
    link.start()
    link.set_ready(True)
    resp = Responder(link, inspect_s=(0.0, args.inspect_ms / 1e3)).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("standin ready", flush=True)
    done.wait(args.duration)
    resp.stop()
    s = link.stats
    Path(args.out).write_text(json.dumps({
        "t_ready": resp.t_ready, "published": s.published, "reconnects": s.reconnects,
        "link_p50_ms": s.latency_ms(0.5), "link_p99_ms": s.latency_ms(0.99)}))
    link.stop()


def _bench(args: argparse.Namespace) -> int:
    """Stand-in daemon in a second process + this PLC; peers for the client modes from tests/plc."""
    import tempfile

    from tests.plc import peers

    port = peers.free_port()
    peer = None
    if args.transport == "modbus_server":
        plc = {"type": "modbus_server", "port": port, "handshake": {"plc_heartbeat_ms": 0}}
    elif args.transport == "modbus_client":
        peer = peers.lmb_server(port).start()
        plc = {"type": "modbus_client", "host": "127.0.0.1", "port": port, "poll_ms": args.daemon_poll_ms,
               "handshake": {"plc_heartbeat_ms": 0}}
    else:
        peer = peers.s7_server(port, native=args.native).start()
        plc = {"type": "s7", "host": "127.0.0.1", "port": port, "poll_ms": args.daemon_poll_ms,
               "handshake": {"plc_heartbeat_ms": 0}}
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    daemon = subprocess.Popen([sys.executable, __file__, "standin", "--plc", json.dumps(plc), "--out", str(out),
                               "--duration", str(args.timeout + 30)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None and "standin ready" in daemon.stdout.readline()
        if args.transport == "modbus_server":
            peers.wait_port(port)
        lay = LayoutConfig(block_a=0, block_b=10) if args.transport == "s7" else LayoutConfig()
        io: PlcIO = S7PlcIO("127.0.0.1", port, lay) if args.transport == "s7" else ModbusPlcIO("127.0.0.1", port, lay)
        rep = PlcSim(io, lay, scan_s=args.scan_ms / 1e3, period_s=args.period_ms / 1e3).run(
            args.parts, timeout_s=args.timeout)
        io.close()
    finally:
        daemon.terminate()
        daemon.wait(20)
        if peer:
            peer.stop()
    stats = json.loads(out.read_text())
    t_ready = {int(k): v for k, v in stats["t_ready"].items()}
    vis = [(rep.t_seen[p] - t_ready[p]) * 1e3 for p in rep.t_seen if p in t_ready]
    _print(rep, args.transport)
    within = sum(v <= 2.0 for v in vis) / max(1, len(vis)) * 100
    print(f"  ready->visible at PLC: p50 {pct(vis, 0.5):.3f} ms  p99 {pct(vis, 0.99):.3f} ms  {within:.1f}% <= 2 ms "
          f"(n={len(vis)}, PLC "
          f"scan {args.scan_ms} ms, pitch {args.period_ms} ms)")
    print(f"  ready->block B written (link stats): p50 {stats['link_p50_ms']:.3f} ms  "
          f"p99 {stats['link_p99_ms']:.3f} ms")
    return 0 if not rep.missing else 1


def _print(rep: SimReport, label: str) -> None:
    lat = [(rep.t_seen[p] - rep.t_trigger[p]) * 1e3 for p in rep.t_seen if p in rep.t_trigger]
    print(f"{label}: {len(rep.triggered)} parts triggered, {len(rep.results)} results, missing "
          f"{len(rep.missing)}{' ' + str(rep.missing[:10]) if rep.missing else ''}, missed-trigger "
          f"{rep.missed_seen}, overrun {rep.overrun_seen}, io errors {rep.io_errors}")
    print(f"  trigger->result at PLC: p50 {pct(lat, 0.5):.3f} ms  p99 {pct(lat, 0.99):.3f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("modbus", "s7"):
        s = sub.add_parser(name, help=f"run the PLC side over {name} against a running daemon / PLC server")
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=5020 if name == "modbus" else 102)
        s.add_argument("--parts", type=int, default=100)
        s.add_argument("--ack-delay-ms", type=float, default=0.0, help="max random delay before RESULT_ACK")
        s.add_argument("--recipe", type=int, action="append", default=[], help="load this RECIPE_NO mid-run")
        s.add_argument("--timeout", type=float, default=120.0)
        s.add_argument("--block-a", type=int, default=0)
        s.add_argument("--block-b", type=int, default=100 if name == "modbus" else 10)
        if name == "modbus":
            s.add_argument("--unit", type=int, default=1)
        else:
            s.add_argument("--db", type=int, default=100)
    b = sub.add_parser("bench", help="stand-in daemon + PLC: verdict ready -> visible at the PLC")
    b.add_argument("--transport", choices=["modbus_server", "modbus_client", "s7"], default="modbus_server")
    b.add_argument("--parts", type=int, default=2000)
    b.add_argument("--scan-ms", type=float, default=0.5, help="PLC scan (poll) period")
    b.add_argument("--period-ms", type=float, default=20.0, help="least time between triggers (part pitch)")
    b.add_argument("--daemon-poll-ms", type=int, default=2, help="client modes: how often the daemon polls block A")
    b.add_argument("--native", action="store_true", help="s7: the native Snap7 server as the PLC")
    b.add_argument("--timeout", type=float, default=300.0)
    st = sub.add_parser("standin", help=argparse.SUPPRESS)
    st.add_argument("--plc", required=True)
    st.add_argument("--out", required=True)
    st.add_argument("--duration", type=float, default=600)
    st.add_argument("--inspect-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.cmd == "standin":
        _standin(args)
        return 0
    if args.cmd == "bench":
        return _bench(args)
    lay = LayoutConfig(block_a=args.block_a, block_b=args.block_b)
    io: PlcIO = (ModbusPlcIO(args.host, args.port, lay, args.unit) if args.cmd == "modbus"
                 else S7PlcIO(args.host, args.port, lay, args.db))
    recipes = {(i + 1) * args.parts // (len(args.recipe) + 1): r for i, r in enumerate(args.recipe)}
    sim = PlcSim(io, lay, ack_delay_s=(0.0, args.ack_delay_ms / 1e3), recipes=recipes)
    signal.signal(signal.SIGINT, lambda *_: sim.stop.set())
    rep = sim.run(args.parts, timeout_s=args.timeout)
    io.close()
    _print(rep, f"{args.cmd} {args.host}:{args.port}")
    for no, ok in rep.recipe.items():
        print(f"  recipe {no}: {'ACK' if ok else 'FAIL'}")
    return 0 if not rep.missing else 1


if __name__ == "__main__":
    sys.exit(main())
