"""Dashboard responsiveness, measured where users feel it: in a real browser (headless Debian chromium).

Browser side (the server and the browser share this machine's cores, as they do for a user running `make run`):
  - navigation -> first chart drawn on the spectra & rank plan page, warm spectra cache (fresh page each time);
  - a cold first visit (no spectra cached): time to the first progress bar, and to the first metrics;
  - ERR slider moved one step -> the totals and the heatmap redrawn (in the browser, from the explorer's grid), and
    -> the page caught up (the value back from the server, no stale element left), median and worst of 10 moves,
    on the embedded model and on LLaMA-2-7B-shaped spectra (224 layers);
Server side (streamlit.testing.AppTest: the real page script, no browser): one rerun after a slider move.
The load average is printed with the figures: they mean little without it.

    .venv/bin/python bench/bench_dashboard.py [--moves 10] [--loads 4]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
APP = ROOT / "app.py"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHART = ".js-plotly-plot .main-svg, .vega-embed svg, .vega-embed canvas, svg.welore-heatmap rect.cell"
SEVEN_B = """import sys
sys.path.insert(0, {bench!r})
sys.path.insert(0, {root!r})
from bench_threshold import llama7b_like
import dashboard.cached as cached
_spectra = llama7b_like()
cached.spectra = lambda *a, **k: _spectra  # the page plans on 224 LLaMA-2-7B-shaped layers
exec(compile(open({app!r}).read(), {app!r}, "exec"))
"""


@contextmanager
def server(app: Path, env: dict[str, str], root: Path = ROOT, flags: Sequence[str] = ()) -> Iterator[str]:
    """`streamlit run app` from the checkout `root` (its .streamlit/config.toml applies), with extra `flags`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false", *flags],
                            cwd=root, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def open_page(browser: Any, url: str) -> tuple[Any, float]:
    """A fresh page navigated to `url` (retried while the server starts); returns it and the navigation time."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    deadline = time.time() + 90
    while True:
        try:
            start = time.perf_counter()
            page.goto(url)
            return page, start
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


METRIC = '[data-testid="stMetric"], .welore-metric'  # Streamlit's metric, or the plan page's totals


def metric(page: Any, label: str) -> str:
    box = page.locator(METRIC).filter(has_text=label).first
    return str(box.locator('[data-testid="stMetricValue"], .value').inner_text()).strip()


def settled(page: Any) -> None:
    """Wait until no element is stale (the rerun's deltas have all arrived) and two frames have painted."""
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')", timeout=60_000)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def load(browser: Any, url: str) -> float:
    """Seconds from navigation to a drawn chart and the totals, in a fresh page."""
    page, start = open_page(browser, url)
    page.locator(CHART).first.wait_for(timeout=180_000)
    page.get_by_text("Achieved ERR", exact=True).wait_for(timeout=60_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def first_chart(browser: Any, url: str, loads: int) -> list[float]:
    return [load(browser, url) for _ in range(loads + 1)][1:]  # the first load warms the server's imports


def plan_page(browser: Any, url: str) -> Any:
    """A page on the plan, its chart drawn and every element current."""
    page, _ = open_page(browser, url)
    page.locator(CHART).first.wait_for(timeout=180_000)
    settled(page)
    return page


def step(page: Any, key: str = "ArrowLeft", nth: int = 0) -> tuple[float, float]:
    """Seconds from one key press on the ERR slider (`nth` 0; the k slider is 1) to (a) the totals and the heatmap
    redrawn (painted), and (b) the
    page caught up: the slider's value back from the server and every element current. Where the totals are the
    server's (an older checkout), (a) is when they arrive, and (b) follows at once."""
    before = metric(page, "Achieved ERR")
    slider = page.get_by_role("slider").nth(nth)
    slider.focus()
    start = time.perf_counter()
    slider.press(key)
    page.wait_for_function(
        "([sel, label, before]) => { const m = [...document.querySelectorAll(sel)]"
        ".find(e => e.innerText.includes(label)); return m && !m.innerText.includes(before); }",
        arg=[METRIC, "Achieved ERR", before], timeout=60_000)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    drawn = time.perf_counter() - start
    page.wait_for_function("() => !document.querySelector('[data-synced=\"false\"]')", timeout=60_000)
    settled(page)
    return drawn, time.perf_counter() - start


def slider_moves(browser: Any, url: str, moves: int, nth: int = 0) -> tuple[list[float], list[float]]:
    """(drawn, caught up) seconds of `moves` steps of slider `nth`, after one that warms the fragment's caches."""
    page = plan_page(browser, url)
    times = [step(page, "ArrowLeft" if nth == 0 else "ArrowRight", nth) for _ in range(moves + 1)][1:]
    page.close()
    return [d for d, _ in times], [c for _, c in times]


def cold_visit(browser: Any) -> tuple[float, float]:
    """A cache with the converted model but no spectra: first progress bar, then first metrics, timed from the
    navigation to the plan page of a server whose imports are warm (a first visit to the Model page)."""
    import welore_core as wc

    source = wc.resolve_model(None)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(source.path, Path(tmp) / "model")
        with server(APP, {"WELORE_MODEL": str(Path(tmp) / "model"), "WELORE_CACHE": str(Path(tmp) / "cache")}) as url:
            page, _ = open_page(browser, f"{url}/Model")
            page.get_by_role("heading", name="Model", exact=True).first.wait_for(timeout=120_000)
            start = time.perf_counter()
            page.goto(url)
            page.locator('[data-testid="stProgress"]').first.wait_for(timeout=120_000)
            progress = time.perf_counter() - start
            failure = page.locator('[data-testid="stException"]')
            page.get_by_text("Achieved ERR", exact=True).or_(failure).first.wait_for(timeout=600_000)
            if failure.count():
                raise RuntimeError(f"the cold page failed: {failure.first.inner_text()[:500]}")
            metrics = time.perf_counter() - start
            page.close()
    return progress, metrics


def server_side() -> tuple[float, float]:
    """AppTest: the page's first run and the median rerun after a slider move, on 7B-scale spectra."""
    from bench_threshold import llama7b_like
    from streamlit.testing.v1 import AppTest

    import dashboard.cached as cached

    spectra = llama7b_like()
    real = cached.spectra
    cached.spectra = lambda *a, **k: spectra  # type: ignore[assignment]
    try:
        at = AppTest.from_file(str(APP), default_timeout=300)
        start = time.perf_counter()
        at.run()
        first = time.perf_counter() - start
        times = []
        for err in (45.0, 40.0, 35.0, 30.0, 25.0, 20.0):
            start = time.perf_counter()
            at.session_state["driver"] = "err"  # what the explorer's callback sets when its ERR slider rests
            at.session_state["err"] = err
            at.run()
            times.append(time.perf_counter() - start)
    finally:
        cached.spectra = real  # type: ignore[assignment]
    return first, statistics.median(times)


def main(moves: int, loads: int, parts: set[str]) -> None:
    from playwright.sync_api import sync_playwright

    import welore_core as wc

    os.environ.pop("WELORE_MODEL", None)
    wc.compute_spectra(None)  # warm the cache (computes once if needed), as `make run` does
    first7b, rerun7b = server_side() if "server" in parts else (float("nan"), float("nan"))
    rows: list[tuple[str, list[float]]] = []

    def add(label: str, times: list[float]) -> None:  # shown as it is measured: a later failure loses nothing
        rows.append((label, times))
        print(f"  {label}: median {statistics.median(times):.3f} s, worst {max(times):.3f} s", file=sys.stderr,
              flush=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        with server(APP, {}) as url:
            if "first" in parts:
                add("embedded model: navigation -> first chart (warm cache), median", first_chart(browser, url, loads))
            if "moves" in parts:
                drawn, caught_up = slider_moves(browser, url, moves)
                add("embedded model: ERR slider step -> totals and heatmap redrawn", drawn)
                add("embedded model: ERR slider step -> page caught up (server rerun)", caught_up)
                drawn, caught_up = slider_moves(browser, url, moves, nth=1)
                add("embedded model: k slider step -> totals and heatmap redrawn", drawn)
                add("embedded model: k slider step -> page caught up (server rerun)", caught_up)
        app7b = ROOT / f".bench-app7b-{os.getpid()}.py"  # beside app.py: its page paths resolve from there
        app7b.write_text(SEVEN_B.format(bench=str(ROOT / "bench"), root=str(ROOT), app=str(APP)))
        try:
            if "7b" in parts:
                with server(app7b, {}) as url:
                    drawn, caught_up = slider_moves(browser, url, moves)
                    add("7B-scale spectra (224 layers): ERR slider step -> totals and heatmap redrawn", drawn)
                    add("7B-scale spectra: ERR slider step -> page caught up (server rerun)", caught_up)
        finally:
            app7b.unlink()
        progress, metrics = cold_visit(browser) if "cold" in parts else (float("nan"), float("nan"))
        browser.close()
    load = os.getloadavg()
    print(f"headless Debian chromium and the server on this machine ({os.cpu_count()} cores), load average "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)\n")
    print("| what | median s | worst s | n |\n|---|---:|---:|---:|")
    for label, times in rows:
        print(f"| {label} | {statistics.median(times):.3f} | {max(times):.3f} | {len(times)} |")
    print(f"| cold first visit (no spectra cached): first progress bar | {progress:.3f} | | 1 |")
    print(f"| cold first visit: first metrics (spectra computed in the page) | {metrics:.3f} | | 1 |")
    print(f"| server side (AppTest), 7B-scale: first page run | {first7b:.3f} | | 1 |")
    print(f"| server side (AppTest), 7B-scale: rerun after an ERR move, median | {rerun7b:.3f} | | 6 |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--loads", type=int, default=4)
    parser.add_argument("--parts", default="server,first,moves,7b,cold",
                        help="comma-separated: server (AppTest), first (first chart), moves, 7b, cold (first visit)")
    a = parser.parse_args()
    main(a.moves, a.loads, set(a.parts.split(",")))
