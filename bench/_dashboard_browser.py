"""Headless Chromium for the dashboard benchmark: first paint and main-thread responsiveness."""

from __future__ import annotations

import statistics
import time
from types import TracebackType
from typing import Any

from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import BrowserContext, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"

_FCP = """() => {
  const entry = performance.getEntriesByName('first-contentful-paint')[0];
  return entry ? entry.startTime : null;
}"""

# Installed before the page's own scripts: every gap between animation frames,
# every long task (> 50 ms on the main thread), and the DOM size each second.
_PROBE = r"""
window.__probe = {gaps: [], long: [], nodes: [], text: []};
(() => {
  let last = performance.now();
  const frame = (now) => {
    window.__probe.gaps.push(now - last);
    last = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  try {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.__probe.long.push(entry.duration);
    }).observe({type: 'longtask', buffered: true});
  } catch (e) {}
  setInterval(() => {
    window.__probe.nodes.push(document.getElementsByTagName('*').length);
    // The newest flood line shown: each starts with its 8-digit number.
    const text = document.body ? document.body.textContent : "";
    const numbers = text.match(/\d{8}(?= )/g);
    window.__probe.text.push(numbers ? Number(numbers[numbers.length - 1]) : -1);
  }, 1000);
})();
"""


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]


class Browser:
    """One headless Chromium with one context holding the session cookie."""

    def __init__(self, cookies: list[dict[str, str]]) -> None:
        self._cookies = cookies
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None
        self._context: BrowserContext | None = None

    def __enter__(self) -> Browser:
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        self._context = self._browser.new_context()
        if self._cookies:
            self._context.add_cookies(self._cookies)  # type: ignore[arg-type]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    def first_paint(self, url: str, loads: int) -> dict[str, Any]:
        """Load `url` `loads` times in one tab (after one load not counted); return FCP in ms.

        One tab, as a person browsing the dashboard has: its renderer process
        is already running, so the figure is the page's, not a process start's.
        """
        assert self._context is not None
        paints: list[float] = []
        errors: list[str] = []
        page = self._context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            for load in range(loads + 1):
                page.goto("about:blank")
                page.goto(url, wait_until="load")
                deadline = time.monotonic() + 5
                paint = page.evaluate(_FCP)
                while paint is None and time.monotonic() < deadline:
                    page.wait_for_timeout(20)
                    paint = page.evaluate(_FCP)
                if paint is not None and load > 0:
                    paints.append(float(paint))
            final = page.url
        finally:
            page.close()
        result: dict[str, Any] = {"loads": loads, "painted": len(paints), "final_url": final}
        if paints:
            result["median_ms"] = round(statistics.median(paints), 1)
            result["p95_ms"] = round(_p95(paints), 1)
        if errors:
            result["page_errors"] = errors[:3]
        return result

    def responsiveness(self, url: str, seconds: float) -> dict[str, Any]:
        """Keep `url` open for `seconds`; return frame gaps, long tasks and DOM sizes."""
        assert self._context is not None
        page = self._context.new_page()
        try:
            page.add_init_script(_PROBE)
            page.goto(url, wait_until="load")
            page.wait_for_timeout(seconds * 1000)
            probe: dict[str, list[float]] = page.evaluate("window.__probe")
        finally:
            page.close()
        gaps = probe["gaps"][1:] or [0.0]
        return {
            "seconds": seconds,
            "frames": len(gaps),
            "frame_gap_p95_ms": round(_p95(gaps), 1),
            "frame_gap_max_ms": round(max(gaps), 1),
            "long_tasks": len(probe["long"]),
            "long_task_total_ms": round(sum(probe["long"]), 1),
            "long_task_max_ms": round(max(probe["long"], default=0.0), 1),
            "dom_nodes_max": max(probe["nodes"], default=0),
            "dom_nodes_last": probe["nodes"][-1] if probe["nodes"] else 0,
            # The newest flood line on the page, first and last second of the probe.
            "newest_line_shown_first_last": [probe["text"][0], probe["text"][-1]]
            if probe["text"]
            else [],
        }
