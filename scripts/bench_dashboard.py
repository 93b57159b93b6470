#!/usr/bin/env python3
"""Dashboard benchmark: the page's weight and its time to interactive, in Chromium.

A daemon (``python -m aiosvc serve``) on a database of 50 sessions, one of them 5,000
messages long (direct inserts, as ``scripts/bench_history.py`` makes them), and Debian's
Chromium under Playwright, headless. It prints, with their targets, the medians over
``--rounds`` fresh browser contexts of:

- the first load: requests, bytes (uncompressed, as served) and the time from the start of the
  navigation to interactive: the page's ``aiosvc-interactive`` mark, set once the stream is
  connected and everything fetched is on screen;
- a reload with the browser's cache: the bytes transferred, headers included (its files
  answer ``304`` without a body), and the time to interactive;
- opening the 5,000-message session at its deep link: time to its last message on screen
  (the ``aiosvc-session-shown`` mark), and the longest task the page's main thread ran
  meanwhile (a frozen tab shows as one long task).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import bench_history  # noqa: E402
import benchlib  # noqa: E402

from tests.browser import launch  # noqa: E402  (Debian's Chromium, as the tests drive it)

#: Every long task (over 50 ms) of the page, from its start.
WATCH_LONG_TASKS = """
window.longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
}).observe({type: "longtask", buffered: true});
"""
LOAD_FIGURES = """() => {
  const mark = performance.getEntriesByName("aiosvc-interactive")[0];
  const entries = [...performance.getEntriesByType("navigation"),
                   ...performance.getEntriesByType("resource")]
    .filter((e) => !e.name.includes("/api/") && !e.name.endsWith("/health"));
  return {
    interactive_ms: mark ? mark.startTime : null,
    requests: entries.length,
    bytes: entries.reduce((sum, e) => sum + e.decodedBodySize, 0),
    transferred: entries.reduce((sum, e) => sum + e.transferSize, 0),
  };
}"""


def mark(page: Page, name: str) -> float:
    """When the page set ``name`` (ms from the start of its navigation)."""
    page.wait_for_function(
        "(name) => performance.getEntriesByName(name).length > 0", arg=name, timeout=30_000
    )
    started: float = page.evaluate(
        "(name) => performance.getEntriesByName(name)[0].startTime", name
    )
    return started


def rounds(args: argparse.Namespace, url: str) -> dict[str, list[float]]:
    """Each round in a fresh context: a first load, a reload, the long session."""
    figures: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    with sync_playwright() as playwright:
        browser = launch(playwright)
        for _ in range(args.rounds):
            context = browser.new_context(viewport={"width": 1400, "height": 860})
            page = context.new_page()
            page.goto(url + "/")
            mark(page, "aiosvc-interactive")
            first: dict[str, Any] = page.evaluate(LOAD_FIGURES)
            keep("first_ms", first["interactive_ms"])
            keep("first_requests", first["requests"])
            keep("first_kb", first["bytes"] / 1024)
            page.reload()
            mark(page, "aiosvc-interactive")
            again: dict[str, Any] = page.evaluate(LOAD_FIGURES)
            keep("reload_ms", again["interactive_ms"])
            keep("reload_kb", again["transferred"] / 1024)
            page.close()
            page = context.new_page()
            page.add_init_script(WATCH_LONG_TASKS)
            page.goto(url + f"/#/sessions/{bench_history.BIG}")
            keep("long_ms", mark(page, "aiosvc-session-shown"))
            page.wait_for_timeout(300)
            keep("long_task_ms", max(page.evaluate("window.longTasks"), default=0.0))
            keep("long_messages", page.locator(".msg").count())
            context.close()
        browser.close()
    return figures


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh browser contexts (5)")
    args = parser.parse_args()
    with benchlib.workdir() as tmp:
        work = Path(tmp)
        bench_history.build(work / "bench.db", 50, 5000)
        port = benchlib.free_port()
        process, _, _ = bench_history.start(work, port)
        try:
            figures = rounds(args, f"http://127.0.0.1:{port}")
        finally:
            benchlib.stop(process)
    med = {name: statistics.median(values) for name, values in figures.items()}
    rows = [
        ("first load: requests", f"{med['first_requests']:.0f}", ""),
        ("first load: size, uncompressed", f"{med['first_kb']:.1f} KB", "< 300 KB"),
        ("first load: time to interactive", f"{med['first_ms']:.0f} ms", "< 1000 ms"),
        ("reload (cached): bytes transferred, headers too", f"{med['reload_kb']:.1f} KB", ""),
        ("reload (cached): time to interactive", f"{med['reload_ms']:.0f} ms", "< 1000 ms"),
        ("5,000-message session: last page shown", f"{med['long_ms']:.0f} ms", "< 1000 ms"),
        ("  messages rendered", f"{med['long_messages']:.0f}", ""),
        ("  longest main-thread task", f"{med['long_task_ms']:.0f} ms", "< 200 ms"),
    ]
    print(f"medians of {args.rounds} rounds, each in a fresh browser context")
    for name, value, target in rows:
        print(f"{name:<48} {value:>12}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
