"""The console's HTTP routes and its one worker thread, served by the metrics HTTP server (same port).

Why the stdlib server and Server-Sent Events: the metrics endpoint already runs on `http.server` (no new runtime
dependency, no second port to open on the line network), updates flow one way (station -> browser), and
EventSource reconnects by itself. What bounds the cost: one worker thread renders everything (status JSON at most
every `status_every_s`, the live JPEG at most `live_fps` a second, yield windows from the journal every
`window_every_s`) and every request or stream only copies those bytes; open streams are capped
(`max_clients`, 503 beyond), each holding one thread that sleeps on a condition between events.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import structlog

from inspectd.config.schema import ConsoleConfig
from inspectd.console.feed import LiveFeed, histogram, render_live
from inspectd.console.gallery import Gallery
from inspectd.console.recipes import Recipes, recipe_view
from inspectd.console.store import ConsoleStore
from inspectd.metrics import configured_plc, readiness

if TYPE_CHECKING:
    from inspectd.console.recipes import RecipeHost
    from inspectd.metrics import StationState

    class Station(StationState, RecipeHost, Protocol):  # what the console reads and asks of the daemon
        ...

log = structlog.get_logger("inspectd.console")

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_BODY = 64 * 1024
WINDOW_EVERY_S = 10.0  # yield/reasons for the hour and shift: one journal query each this often


def shift_start(now: float, hours: list[int]) -> float:
    """Unix time the current shift began: the latest of today's (or yesterday's) `hours` (local time)."""
    t = datetime.fromtimestamp(now)
    starts = [t.replace(hour=h, minute=0, second=0, microsecond=0) - timedelta(days=d)
              for d in (0, 1) for h in hours]
    return max(s for s in starts if s <= t).timestamp()


class Console:
    def __init__(self, station: Station, cfg: ConsoleConfig, budget_ms: float, journal_path: Path,
                 archive_root: Path | None) -> None:
        self.station = station
        self.cfg = cfg
        self.budget_ms = budget_ms
        self.feed = LiveFeed(cfg.live_fps)
        self.store = ConsoleStore(journal_path)
        self.gallery = Gallery(archive_root) if archive_root is not None else None
        self.recipes = Recipes(station, self.store, cfg.token_file)
        self.clients = 0
        self.refused_clients = 0
        self._clients_lock = threading.Lock()
        self._cond = threading.Condition()
        self._gen = 0
        self._status = b"{}"
        self._live: bytes | None = None
        self._live_event = b""
        self._windows: dict[str, Any] = {}
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self._page = PAGE.read_bytes()
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._gen += 1
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(5.0)

    # -- the worker: every render happens here ------------------------------------------------------
    def _run(self) -> None:
        last_window = time.monotonic() - WINDOW_EVERY_S + 2.0  # the first query once the journal has rows
        shots = -1
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if t0 - last_window >= WINDOW_EVERY_S:
                    now = time.time()
                    self._windows = {"hour": self.store.window(now - 3600),
                                     "shift": self.store.window(shift_start(now, self.cfg.shift_starts))}
                    last_window = t0
                live_event = b""
                shot = self.feed.latest
                if shot is not None and self.feed.shots != shots:
                    shots = self.feed.shots
                    jpeg = render_live(shot)
                    v = shot.verdict
                    meta = {"seq": v.seq, "part_id": v.part_id, "product": v.product, "verdict": v.outcome.value,
                            "reason": v.reason, "score": v.score, "latency_ms": round(v.latency_ms, 3),
                            "wall_time": v.wall_time}
                    if jpeg is not None:
                        self._live = jpeg
                        meta["jpeg"] = base64.b64encode(jpeg).decode()
                    live_event = b"event: live\ndata: " + json.dumps(meta).encode() + b"\n\n"
                self._status = json.dumps(self.status()).encode()
                with self._cond:
                    self._live_event = live_event
                    self._gen += 1
                    self._cond.notify_all()
            except Exception:  # the console must never take anything down with it
                log.exception("console_render_failed")
            self._stop.wait(max(0.05, self.cfg.status_every_s - (time.monotonic() - t0)))

    def status(self) -> dict[str, Any]:
        d = self.station
        pipeline = d.pipeline
        by_verdict = {"pass": 0, "reject": 0, "failsafe": 0}
        failsafes: dict[str, int] = {}
        if pipeline is not None:
            for (_product, outcome), n in dict(pipeline.stats.verdicts).items():
                key = str(getattr(outcome, "value", outcome))
                by_verdict[key] = by_verdict.get(key, 0) + n
            failsafes = {str(k): v for k, v in dict(pipeline.stats.failsafe_reasons).items()}
        total = sum(by_verdict.values())
        checks = readiness(d)
        plc = configured_plc(d)
        active = self.recipes.active()
        product = d.config.products.get(active)
        lat = histogram(list(self.feed.latency_ms), self.budget_ms)
        health: dict[str, Any] = {
            "ready": bool(checks) and all(checks.values()), "checks": checks,
            "loop_overdue": d.liveness.check().overdue,
            "camera": {"connected": bool(d.source is not None and d.source.connected)},
            "plc": {"configured": plc is not None, "connected": bool(plc.connected) if plc is not None else None},
            "model": ({k: str(v) for k, v in pipeline.active.backend.describe().items()}
                      if pipeline is not None else None),
            "reloads": dict(d.reloads),
        }
        return {"station": d.config.station.name, "parts_total": total, "verdicts": by_verdict,
                "yield": round(by_verdict["pass"] / total, 6) if total else None,
                "failsafes": failsafes, "active_product": active,
                "recipe_no": product.plc_id if product is not None else None,
                "budget_ms": self.budget_ms, "p99_latency_ms": lat["p99_ms"], "latency": lat,
                "windows": self._windows, "health": health, "console_clients": self.clients,
                "t": time.time()}

    # -- HTTP ---------------------------------------------------------------------------------------
    def handle(self, h: BaseHTTPRequestHandler, method: str) -> bool:
        """Serve the console's paths; False for a path that is not the console's."""
        url = urlsplit(h.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        if method == "GET":
            if path in ("/", "/index.html"):
                _send(h, 200, self._page, "text/html; charset=utf-8")
            elif path == "/api/status":
                _send(h, 200, self._status, "application/json")
            elif path == "/api/events":
                self._events(h)
            elif path == "/api/live.jpg":
                live = self._live
                _send(h, 200 if live else 404, live or b"", "image/jpeg")
            elif path == "/api/recipes":
                body = recipe_view(self.station.config, self.recipes.active())
                body.update(writable=self.recipes.writable, audit=self.store.audit_log())
                _json(h, 200, body)
            elif path == "/api/rejects":
                if self.gallery is None:
                    _json(h, 200, {"items": [], "products": [], "reasons": [], "archive": False})
                    return True
                limit = max(1, min(200, int(q.get("limit", "60") or 60)))
                _json(h, 200, self.gallery.items(q.get("product") or None, q.get("reason") or None, limit,
                                                 self.store.marks()))
            elif path in ("/api/thumb.jpg", "/api/image.png", "/api/annotated.jpg"):
                self._file(h, path, q.get("stem", ""))
            elif path == "/api/part":
                self._part(h, q.get("stem", ""))
            elif path == "/api/export.zip":
                self._export(h)
            else:
                return False
            return True
        if method == "POST" and path in ("/api/recipes", "/api/mark"):
            posted = _body(h)
            if posted is None:
                _json(h, 400, {"error": "a JSON object body is required"})
                return True
            token = h.headers.get("Authorization", "")
            token_value = token[7:].strip() if token.startswith("Bearer ") else None
            who = (h.headers.get("X-Operator") or "operator").strip()[:64] or "operator"
            client = h.client_address[0]
            if path == "/api/recipes":
                out = self.recipes.change(posted, who, client, token_value)
                _json(h, out.status, out.body)
            else:
                self._mark(h, posted, who, token_value)
            return True
        return False

    def _events(self, h: BaseHTTPRequestHandler) -> None:
        with self._clients_lock:
            if self.clients >= self.cfg.max_clients:
                self.refused_clients += 1
                full = True
            else:
                self.clients += 1
                full = False
        if full:
            h.send_response(503)
            h.send_header("Retry-After", "10")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        try:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.end_headers()
            h.wfile.write(b"retry: 3000\n\n")
            gen = -1
            while not self._stop.is_set():
                with self._cond:
                    if self._gen == gen and not self._stop.is_set():  # one render -> one wake-up per client
                        self._cond.wait(timeout=15.0)
                    if self._gen == gen:
                        h.wfile.write(b": keep-alive\n\n")
                        h.wfile.flush()
                        continue
                    gen, status, live = self._gen, self._status, self._live_event
                h.wfile.write(b"event: status\ndata: " + status + b"\n\n" + live)
                h.wfile.flush()
        except OSError:  # the browser went away
            pass
        finally:
            with self._clients_lock:
                self.clients -= 1

    def _file(self, h: BaseHTTPRequestHandler, path: str, stem: str) -> None:
        data: bytes | None = None
        if self.gallery is not None:
            if path == "/api/thumb.jpg":
                data = self.gallery.thumbnail(stem)
            else:
                p = self.gallery.path(stem, ".png" if path == "/api/image.png" else ".jpg")
                data = p.read_bytes() if p is not None else None
        if data is None:
            _json(h, 404, {"error": "no such archived part", "stem": stem})
            return
        _send(h, 200, data, "image/png" if path.endswith(".png") else "image/jpeg", cache=True)

    def _part(self, h: BaseHTTPRequestHandler, stem: str) -> None:
        meta = self.gallery.meta(stem) if self.gallery is not None else None
        if meta is None:
            _json(h, 404, {"error": "no such archived part", "stem": stem})
            return
        row = self.store.find_row(int(meta["seq"]), int(meta["part_id"]), str(meta["product"]),
                                  float(meta["wall_time"]))
        meta["mark"] = self.store.marks().get(stem)
        _json(h, 200, {"part": meta, "journal": row})

    def _mark(self, h: BaseHTTPRequestHandler, body: Mapping[str, Any], who: str, token: str | None) -> None:
        if not self.recipes.authorised(token):
            _json(h, 403, {"error": "bad or no token" if self.recipes.writable else "no operator token configured"})
            return
        stem = str(body.get("stem", ""))
        mark = body.get("mark")
        meta = self.gallery.meta(stem) if self.gallery is not None else None
        if meta is None or mark not in (None, "false_reject"):
            _json(h, 400, {"error": "need an archived part's stem and mark: false_reject or null"})
            return
        row = self.store.find_row(int(meta["seq"]), int(meta["part_id"]), str(meta["product"]),
                                  float(meta["wall_time"]))
        self.store.mark(stem, row.get("part_no") if row else None, mark, who)
        _json(h, 200, {"stem": stem, "mark": mark, "part_no": row.get("part_no") if row else None})

    def _export(self, h: BaseHTTPRequestHandler) -> None:
        if self.gallery is None:
            _json(h, 404, {"error": "archive disabled"})
            return
        if not self._export_lock.acquire(blocking=False):  # one export at a time: it reads every marked image
            _json(h, 429, {"error": "an export is running"})
            return
        try:
            data = self.gallery.export(self.store.marks())
        finally:
            self._export_lock.release()
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Disposition", 'attachment; filename="false_rejects.zip"')
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _body(h: BaseHTTPRequestHandler) -> dict[str, Any] | None:
    try:
        n = int(h.headers.get("Content-Length", "0"))
    except ValueError:
        return None
    if not 0 < n <= MAX_BODY:
        return None
    try:
        body = json.loads(h.rfile.read(n))
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json(h: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    _send(h, code, json.dumps(body).encode(), "application/json")


def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str, cache: bool = False) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
    h.end_headers()
    h.wfile.write(body)
