"""Screenshot of the running dashboard for the README (headless Debian chromium driven by Playwright).

    .venv/bin/streamlit run app.py --server.port 8599 --server.headless true &
    .venv/bin/python docs/screenshot.py http://127.0.0.1:8599 docs/dashboard.png
"""
from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(url: str, out: str) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1250})
        page.goto(url)
        page.get_by_text("Achieved ERR", exact=True).wait_for(timeout=180_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2500)  # let plotly finish drawing
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8501", sys.argv[2] if len(sys.argv) > 2 else "docs/dashboard.png")
