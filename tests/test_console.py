"""The console's HTTP API against a running demo daemon: status, gallery, journal row, marks, recipe changes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
import zipfile
from io import BytesIO
from pathlib import Path

from tests.console_station import TOKEN, console_daemon, get, get_json, post, wait_for


def test_status_gallery_marks_and_export(tmp_path: Path) -> None:
    with console_daemon(tmp_path) as (_, base):
        status, page = get(base + "/")
        assert status == 200 and b'id="parts-total"' in page
        assert b'src="http' not in page and b'href="http' not in page  # self-contained: the line has no internet
        for path in ("/metrics", "/healthz"):
            assert get(base + path)[0] == 200  # the metrics endpoints stay
        s = wait_for(lambda: (x := get_json(base + "/api/status"))["parts_total"] >= 10 and x, what="parts")
        assert s["active_product"] == "disc-a" and s["recipe_no"] == 1
        assert sum(s["verdicts"].values()) == s["parts_total"] and s["p99_latency_ms"] > 0
        assert set(s["health"]["checks"]) >= {"camera", "backend", "journal"}
        rejects = wait_for(lambda: get_json(base + "/api/rejects")["items"], what="an archived reject")
        first = rejects[0]
        assert first["verdict"] in ("reject", "failsafe") and "disc-a" in get_json(base + "/api/rejects")["products"]
        assert get_json(base + "/api/rejects?product=nope")["items"] == []
        status, thumb = get(base + "/api/thumb.jpg?stem=" + first["stem"])
        assert status == 200 and thumb[:2] == b"\xff\xd8"
        status, png = get(base + "/api/image.png?stem=" + first["stem"])
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        assert get(base + "/api/image.png?stem=../../etc/passwd")[0] == 404
        part = get_json(base + "/api/part?stem=" + first["stem"])
        row = part["journal"]
        assert row["seq"] == first["seq"] and row["verdict"] == first["verdict"] and row["part_no"] is not None
        # A mark needs the token; with it, it is kept in the journal file and exported with the images.
        assert post(base + "/api/mark", {"stem": first["stem"], "mark": "false_reject"})[0] == 403
        code, body = post(base + "/api/mark", {"stem": first["stem"], "mark": "false_reject"}, TOKEN, who="ann")
        assert code == 200 and body["part_no"] == row["part_no"]
        status, data = get(base + "/api/export.zip")
        names = zipfile.ZipFile(BytesIO(data)).namelist()
        assert status == 200 and f"false_reject/{first['stem']}.png" in names and "marks.json" in names
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT part_no, mark, who FROM marks").fetchall() == [(row["part_no"], "false_reject", "ann")]


def test_recipe_changes_need_the_token_are_validated_and_audited(tmp_path: Path) -> None:
    with console_daemon(tmp_path) as (d, base):
        wait_for(lambda: get_json(base + "/api/status")["parts_total"] >= 2, what="parts")
        switch = {"action": "switch_product", "product": "disc-b"}
        assert post(base + "/api/recipes", switch)[0] == 403
        assert post(base + "/api/recipes", switch, "wrong")[0] == 403
        assert d.pipeline is not None and d.pipeline.active.name == "disc-a"
        assert post(base + "/api/recipes", switch, TOKEN)[0] == 200
        wait_for(lambda: get_json(base + "/api/status")["active_product"] == "disc-b", what="switch applied")
        product = tmp_path / "products" / "disc-a.yaml"
        before = product.read_text()
        bad = {"action": "set_threshold", "product": "disc-a", "rule": "defect", "value": 1.5}
        code, body = post(base + "/api/recipes", bad, TOKEN)
        assert code == 400 and "disc-a.yaml:" in body["problems"][0] and "min_score" in body["problems"][0]
        assert product.read_text() == before  # the file is back as it was
        good = {"action": "set_threshold", "product": "disc-a", "rule": "defect", "value": 0.7}
        code, body = post(base + "/api/recipes", good, TOKEN, who="bob")
        assert code == 200 and body["old"] == 0.5 and body["new"] == 0.7
        assert d.config.products["disc-a"].rules[0].min_score == 0.7  # reloaded: the daemon runs the new value
        assert d.reloads["applied"] == 1
        recipes = get_json(base + "/api/recipes")
        assert recipes["writable"] and recipes["active"] == "disc-b"
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    audit = db.execute("SELECT who, action, target, old, new, result FROM audit ORDER BY id").fetchall()
    assert [a[5].split(":")[0] for a in audit] == ["refused", "refused", "applied", "refused", "applied"]
    assert audit[2][1:5] == ("switch_product", "disc-b", "disc-a", "disc-b")
    assert audit[4] == ("bob", "set_threshold", "disc-a/defect", "0.5", "0.7", "applied")


def test_read_only_without_a_token_and_capped_streams(tmp_path: Path) -> None:
    with console_daemon(tmp_path, token=False, console={"max_clients": 2, "status_every_s": 0.2}) as (d, base):
        code, body = post(base + "/api/recipes", {"action": "switch_product", "product": "disc-b"}, "anything")
        assert code == 403 and "no operator token" in body["error"]
        assert get_json(base + "/api/recipes")["writable"] is False
        streams = [urllib.request.urlopen(base + "/api/events", timeout=30) for _ in range(2)]
        try:
            events = []
            for line in streams[0]:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
                if any("parts_total" in e for e in events):
                    break
            assert get(base + "/api/events")[0] == 503  # a third stream is refused: the cap bounds the cost
            assert d.console is not None and d.console.refused_clients == 1
        finally:
            for s in streams:
                s.close()
        assert threading.active_count() < 200


def test_concurrent_scrapes_share_renders() -> None:
    """Single flight: scrapes that arrive during a render get that render; none gets a partial or empty body."""
    from prometheus_client.core import GaugeMetricFamily

    from inspectd.metrics import Metrics

    class Slow:  # a render that takes a while, like a daemon's full registry on a busy machine
        def collect(self):  # type: ignore[no-untyped-def]
            time.sleep(0.05)
            yield GaugeMetricFamily("slow_render", "a slow collector", value=1.0)

    m = Metrics(0.05, collectors=[Slow()])  # type: ignore[list-item]
    m.start("127.0.0.1", 0)
    try:
        assert m.server is not None
        url = f"http://127.0.0.1:{m.server.port}/metrics"
        bodies: list[bytes] = []
        barrier = threading.Barrier(16)

        def scrape() -> None:
            barrier.wait()
            for _ in range(10):
                bodies.append(get(url)[1])

        threads = [threading.Thread(target=scrape) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(bodies) == 160 and all(b"slow_render 1.0" in b and b"inspectd_cycle_budget" in b for b in bodies)
        assert m.renders <= 80, m.renders  # without sharing: 160 renders
    finally:
        m.close()


def test_metrics_cache_serves_one_render_to_every_scraper() -> None:
    from inspectd.metrics import Metrics

    m = Metrics(0.05, cache_s=60.0)
    m.start("127.0.0.1", 0)
    try:
        assert m.server is not None
        bodies = [get(f"http://127.0.0.1:{m.server.port}/metrics")[1] for _ in range(20)]
        assert m.renders == 1 and len(set(bodies)) == 1 and b"inspectd_cycle_budget_seconds 0.05" in bodies[0]
    finally:
        m.close()


def test_live_feed_keeps_references_at_a_bounded_rate() -> None:
    """The hot-path sink: every latency kept (bounded), at most ~2x fps shots however fast verdicts come."""
    from inspectd.console.feed import LiveFeed
    from inspectd.types import Outcome, Verdict

    feed = LiveFeed(fps=2.0, latencies=100)
    t0 = time.monotonic()
    for i in range(5000):
        outcome = Outcome.REJECT if i % 3 == 0 else Outcome.PASS
        feed.submit(Verdict(seq=i, part_id=i, product="p", outcome=outcome, reason="", result_code=0, plc_ok=True,
                            score=0.1, scores={}, t_trigger=0.0, t_verdict=0.002, truth=None, model_sha256="",
                            stage_ms={}, wall_time=0.0))
    elapsed = time.monotonic() - t0
    assert len(feed.latency_ms) == 100 and feed.latency_ms[-1] == 2.0
    assert 1 <= feed.shots <= 2 * (2.0 * elapsed + 1)
    assert feed.latest is not None and feed.latest.frame is None


def test_threshold_edit_keeps_the_file_and_its_comments(tmp_path: Path) -> None:
    from inspectd.config.load import load_product
    from inspectd.console.recipes import edit_min_score
    from tests.conftest import DEMO

    path = tmp_path / "disc-a.yaml"
    text = (DEMO / "products" / "disc-a.yaml").read_text().replace("../../../engines/", str(DEMO.parent.parent /
                                                                                               "engines") + "/")
    path.write_text(text)
    edited = edit_min_score(path, text, 0, 0.65)
    changed = [(a, b) for a, b in zip(text.splitlines(), edited.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "min_score: 0.65" in changed[0][1] and "#" in edited
    path.write_text(edited)
    assert load_product(path).rules[0].min_score == 0.65


def test_shift_start() -> None:
    from datetime import datetime

    from inspectd.console.app import shift_start

    now = datetime(2026, 12, 2, 15, 30).timestamp()
    assert shift_start(now, [6, 14, 22]) == datetime(2026, 12, 2, 14, 0).timestamp()
    early = datetime(2026, 12, 2, 3, 0).timestamp()
    assert shift_start(early, [6, 14, 22]) == datetime(2026, 12, 1, 22, 0).timestamp()
