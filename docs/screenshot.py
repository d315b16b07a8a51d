"""Screenshots of the running dashboard for the README and docs (headless Debian chromium via Playwright).

    .venv/bin/streamlit run app.py --server.port 8599 &
    .venv/bin/python docs/screenshot.py http://127.0.0.1:8599 docs/

Writes dashboard.png (rank plan tab), dashboard-spectra.png, dashboard-layers.png, dashboard-compare.png,
dashboard-model.png, dashboard-evaluate.png, dashboard-sensitivity.png, dashboard-finetune.png and
dashboard-dynamics.png (those show the run registry's runs and whatever jobs the URL names).
"""
from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


CHART = ".js-plotly-plot .main-svg, .vega-embed svg, .vega-embed canvas, svg.welore-heatmap rect.cell"


def _settle(page: Page, charts: bool = True) -> None:
    if charts:
        page.locator(CHART).first.wait_for(timeout=120_000)
    page.wait_for_timeout(2500)  # let the charts finish drawing


def main(url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1250})
        page.goto(url)
        page.get_by_text("Achieved ERR", exact=True).wait_for(timeout=180_000)
        page.set_viewport_size({"width": 1500, "height": 2300})  # the explorer above the tabs: tall enough for both
        _settle(page)
        page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        for tab, name in (("Spectra", "spectra"), ("Layers", "layers"), ("Compare strategies", "compare")):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1500)
            _settle(page, charts=name != "layers")
            page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=True)
        page.set_viewport_size({"width": 1500, "height": 1250})
        for link, name, charts in (("Model", "model", False), ("Compress & evaluate", "evaluate", True),
                                   ("Sensitivity", "sensitivity", False), ("Fine-tune", "finetune", True),
                                   ("Gradient dynamics", "dynamics", False)):  # charts only once a run exists
            page.get_by_role("link", name=link).click()
            page.get_by_role("heading", name=link, exact=True).first.wait_for(timeout=60_000)
            _settle(page, charts)
            page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8501", Path(sys.argv[2] if len(sys.argv) > 2 else "docs"))
