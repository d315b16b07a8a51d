"""Two versions of the dashboard side by side in one browser, measured alternately (A/B), so that a change in
the machine's load hits both: navigation -> first chart, and ERR slider steps -> totals and heatmap
redrawn, and -> page caught up (bench_dashboard.step).

A and B are project checkouts (a `git worktree` of another commit, or this one) and/or server flags:

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/bench_dashboard_ab.py --a /tmp/before --b .              # a change in the code
    .venv/bin/python bench/bench_dashboard_ab.py --b-flags="--server.fileWatcherType none"   # a server setting

Both servers share one spectra cache (this checkout's, or $WELORE_CACHE), so neither computes anything.
Prints each side's median and worst, and the ratio B / A of the medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dashboard import FLAGS, ROOT, load, plan_page, server, step  # noqa: E402


def report(what: str, times: dict[str, list[float]]) -> None:
    for side in "AB":
        print(f"{what}, {side}: median {statistics.median(times[side]):.3f} s, worst {max(times[side]):.3f} s, "
              f"n {len(times[side])}")
    print(f"{what}: B / A median {statistics.median(times['B']) / statistics.median(times['A']):.3f}")


def main(a: Path, b: Path, a_flags: list[str], b_flags: list[str], loads: int, moves: int) -> None:
    from playwright.sync_api import sync_playwright

    cache = {"WELORE_CACHE": os.environ.get("WELORE_CACHE", str(ROOT / "cache"))}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        with (server(a / "app.py", {**cache, "PYTHONPATH": str(a)}, a, a_flags) as url_a,
              server(b / "app.py", {**cache, "PYTHONPATH": str(b)}, b, b_flags) as url_b):
            urls = {"A": url_a, "B": url_b}
            for url in urls.values():  # warm each server's imports and caches
                load(browser, url)
            times: dict[str, list[float]] = {"A": [], "B": []}
            for i in range(loads):
                for side in ("AB" if i % 2 == 0 else "BA"):
                    times[side].append(load(browser, urls[side]))
            if loads:
                report("navigation -> first chart", times)
            pages = {side: plan_page(browser, url) for side, url in urls.items()}
            drawn: dict[str, list[float]] = {"A": [], "B": []}
            caught_up: dict[str, list[float]] = {"A": [], "B": []}
            for i in range(moves + 1):  # five steps down, five up: the plan stays near the default
                key = "ArrowLeft" if (i // 5) % 2 == 0 else "ArrowRight"
                for side in ("AB" if i % 2 == 0 else "BA"):
                    pages[side].bring_to_front()
                    seconds = step(pages[side], key)
                    if i:  # the first move warms the fragment
                        drawn[side].append(seconds[0])
                        caught_up[side].append(seconds[1])
            if moves:
                report("ERR slider step -> totals and heatmap redrawn", drawn)
                report("ERR slider step -> page caught up (server rerun)", caught_up)
        browser.close()
    avg = os.getloadavg()
    print(f"load average {avg[0]:.2f} / {avg[1]:.2f} / {avg[2]:.2f} (1 / 5 / 15 min), {os.cpu_count()} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=ROOT, help="checkout served as A (default: this one)")
    parser.add_argument("--b", type=Path, default=ROOT, help="checkout served as B (default: this one)")
    parser.add_argument("--a-flags", default="", help="extra `streamlit run` flags for A")
    parser.add_argument("--b-flags", default="", help="extra `streamlit run` flags for B")
    parser.add_argument("--loads", type=int, default=6, help="first-chart loads per side")
    parser.add_argument("--moves", type=int, default=20, help="slider steps per side")
    args = parser.parse_args()
    main(args.a.resolve(), args.b.resolve(), args.a_flags.split(), args.b_flags.split(), args.loads, args.moves)
