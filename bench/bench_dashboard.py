"""Dashboard responsiveness: a slider move on 7B-scale spectra, and the spectra page of the embedded model.

1. LLaMA-2-7B-shaped spectra (224 layers, 917,504 values; synthetic, as in bench_threshold.py) behind the
   real plan page, run through streamlit.testing.AppTest: the server-side time of one rerun after the ERR
   slider moves (plan, totals, every tab's tables and figures serialised). Baseline: the same rerun when
   the per-strategy scores are not kept between reruns (normalise + sort of 917,504 values per move).
2. The embedded SmolLM2-135M with a warm spectra cache: the first full run of the page (AppTest), and,
   when Debian chromium is installed, the browser's time from navigation to the first drawn chart.
   Target: under 2 s.

    .venv/bin/python bench/bench_dashboard.py
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
APP = str(ROOT / "app.py")


def slider_moves() -> None:
    from streamlit.testing.v1 import AppTest

    import dashboard.cached as cached
    import welore_core as wc
    from bench_threshold import llama7b_like

    spectra = llama7b_like()
    real = cached.spectra
    cached.spectra = lambda *a, **k: spectra  # type: ignore[assignment]
    try:
        at = AppTest.from_file(APP, default_timeout=300)
        start = time.perf_counter()
        at.run()
        first = time.perf_counter() - start
        assert not at.exception, at.exception
        errs = [45.0, 40.0, 35.0, 30.0, 25.0, 20.0]

        def moves(clear: bool) -> list[float]:
            times = []
            for err in errs:
                if clear:
                    cached.scores.clear()
                start = time.perf_counter()
                at.slider[0].set_value(err).run()
                times.append(time.perf_counter() - start)
                assert not at.exception, at.exception
            return times

        kept = moves(clear=False)
        fresh = moves(clear=True)
        plan_only = []
        scores = wc.prepare_scores(spectra)
        for err in errs:
            start = time.perf_counter()
            wc.make_plan(spectra, wc.PlanConfig(err=err), scores)
            plan_only.append(time.perf_counter() - start)
    finally:
        cached.spectra = real  # type: ignore[assignment]
    n = sum(v.size for v in spectra.values.values())
    print(f"7B-scale spectra: {len(spectra.layers)} layers, {n:,} values")
    print(f"  first page run                      {first:7.3f} s")
    print(f"  rerun per slider move (median)      {statistics.median(kept):7.3f} s   "
          f"(of which make_plan {1e3 * statistics.median(plan_only):.1f} ms)")
    print(f"  baseline: scores rebuilt per move   {statistics.median(fresh):7.3f} s   "
          f"ratio {statistics.median(fresh) / statistics.median(kept):.2f}x")


def embedded_page() -> None:
    from streamlit.testing.v1 import AppTest

    import welore_core as wc

    os.environ.pop("WELORE_MODEL", None)
    wc.compute_spectra(None)  # warm the cache (computes once if needed)
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        at = AppTest.from_file(APP, default_timeout=300).run()
        runs.append(time.perf_counter() - start)
        assert not at.exception and not at.error, (at.exception, at.error)
    print(f"embedded SmolLM2-135M, warm cache: first page run (AppTest) median {statistics.median(runs):.3f} s "
          f"(target 2 s: {2.0 / statistics.median(runs):.1f}x under)")
    if Path("/usr/bin/chromium").exists():
        browser_draw()


def browser_draw() -> None:
    import socket

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
            times = []
            for i in range(4):
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                deadline = time.time() + 60
                while True:  # the server may still be starting
                    try:
                        start = time.perf_counter()
                        page.goto(f"http://127.0.0.1:{port}")
                        break
                    except Exception:
                        if time.time() > deadline:
                            raise
                        time.sleep(0.5)
                page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=120_000)
                page.get_by_text("Achieved ERR", exact=True).wait_for(timeout=60_000)
                if i:  # the first load warms the server's imports
                    times.append(time.perf_counter() - start)
                page.close()
            browser.close()
        print(f"  browser (headless chromium): navigation to first drawn chart, median of {len(times)}: "
              f"{statistics.median(times):.3f} s (target 2 s: {2.0 / statistics.median(times):.1f}x under)")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    slider_moves()
    embedded_page()


if __name__ == "__main__":
    main()
