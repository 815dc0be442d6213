"""The console in a real headless browser: Debian's chromium driven by Playwright (never a downloaded browser).

CONSOLE_SHOTS=<folder> keeps the screenshots (README's come from tools/reports/console_*.png)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.console_station import TOKEN, console_daemon

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and Path(p).exists()),
                None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (tools/ci-deps.sh installs it)")

# Saturated pixels of the thumbnail below its caption line and inside its ROI frame: a grey camera image has none,
# so they are the heatmap drawn over the defect.
HEATMAP_PIXELS = """img => {
  const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d"); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let y = Math.ceil(c.height * 0.12); y < c.height - 4; y++) for (let x = 4; x < c.width - 4; x++) {
    const i = 4 * (y * c.width + x), r = d[i], gg = d[i + 1], b = d[i + 2];
    if (Math.max(r, gg, b) - Math.min(r, gg, b) > 80) n++;
  }
  return n;
}"""


def test_console_in_chromium(tmp_path: Path) -> None:
    shots = Path(os.environ.get("CONSOLE_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with console_daemon(tmp_path) as (d, base), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(base + "/")
            # The count rises, pushed over SSE without a reload.
            page.wait_for_function("() => Number(document.getElementById('parts-total').textContent) > 0",
                                   timeout=60_000)
            first = int(page.text_content("#parts-total") or "0")
            page.wait_for_function(f"() => Number(document.getElementById('parts-total').textContent) > {first}",
                                   timeout=60_000)
            page.wait_for_function("() => document.getElementById('live-img').src.startsWith('data:image/jpeg')",
                                   timeout=60_000)
            assert page.text_content("#active-product") == "disc-a"
            page.screenshot(path=str(shots / "console_live.png"))

            # A reject appears in the gallery with its heatmap; one click opens its images and journal row.
            page.click("nav button[data-tab=rejects]")
            page.wait_for_selector(".thumb img", timeout=60_000)
            # Rejects by the model (a deadline fail-safe on a loaded machine has a frame but no heatmap).
            page.wait_for_selector("#f-reason option[value=defect]", state="attached", timeout=60_000)
            page.select_option("#f-reason", "defect")
            page.wait_for_function("() => { const t = [...document.querySelectorAll('.thumb')]; "
                                   "return t.length > 0 && t.every(x => x.textContent.includes('defect')); }",
                                   timeout=30_000)
            thumb = page.locator(".thumb img").first
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle(),
                                   timeout=30_000)
            assert thumb.evaluate(HEATMAP_PIXELS) > 50
            page.locator(".thumb").first.click()
            page.wait_for_function("() => (document.getElementById('journal-row') || {}).textContent"
                                   "?.includes('part_no')", timeout=30_000)
            page.wait_for_function("() => document.getElementById('detail-img').naturalWidth > 0", timeout=30_000)
            page.screenshot(path=str(shots / "console_rejects.png"))

            # Recipe change: refused without the token, applied and audited with it.
            page.click("nav button[data-tab=recipes]")
            page.wait_for_selector("#switch-product option", state="attached", timeout=30_000)
            page.select_option("#switch-product", "disc-b")
            page.click("#do-switch")
            page.wait_for_function("() => document.getElementById('recipe-result').textContent.includes('refused')",
                                   timeout=30_000)
            assert d.pipeline is not None and d.pipeline.active.name == "disc-a"
            page.fill("#operator", "ann")
            page.fill("#token", TOKEN)
            page.select_option("#switch-product", "disc-b")
            page.click("#do-switch")
            page.wait_for_function("() => document.getElementById('recipe-result').textContent.includes('applied')",
                                   timeout=30_000)
            page.wait_for_function("() => document.getElementById('active-product').textContent === 'disc-b'",
                                   timeout=60_000)
            page.wait_for_function("() => document.getElementById('audit').textContent.includes('ann')",
                                   timeout=30_000)
            audit = page.text_content("#audit") or ""
            assert "switch_product" in audit and "disc-a → disc-b" in audit and "applied" in audit
            assert "refused" in audit
            page.screenshot(path=str(shots / "console_recipes.png"))
        finally:
            browser.close()
