"""Export a `welore dynamics` run's figures for docs/dynamics.md: HTML (plotly from its CDN), PNG
screenshots (headless Debian chromium driven by Playwright, plotly.js inlined so no network is needed;
kaleido is not required), and the per-layer summary as a markdown table.

    .venv/bin/python docs/dynamics/export.py out/dynamics-small docs/dynamics
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from welore_core.charts_dynamics import (emergence_curves_figure, emergence_heatmap_figure, gradient_cosine_figure,
                                         loss_figure, saturation_figure, spectra_time_figure)
from welore_core.dynamics_analysis import (EmergenceConfig, claim_check, emergence_over_time, emergence_summary,
                                           gradient_cosines, load_run, spectra_over_time)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(run_folder: str, out: str) -> None:
    run = load_run(run_folder)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    config = EmergenceConfig()
    cosines = gradient_cosines(run, config.source)
    summary = emergence_summary(run, config, cosines)
    over_time = emergence_over_time(run, config, cosines)
    blocks = sorted({l.block for l in run.layers})
    first, middle, last = blocks[0], blocks[len(blocks) // 2], blocks[-1]
    picks = {f"b{first}_q_proj": f"model.layers.{first}.self_attn.q_proj",
             f"b{last}_q_proj": f"model.layers.{last}.self_attn.q_proj",
             f"b{middle}_down_proj": f"model.layers.{middle}.mlp.down_proj",
             f"b{middle}_up_proj": f"model.layers.{middle}.mlp.up_proj"}
    figures = {"loss": loss_figure(run.losses(), run.steps, run.scalars("probe_loss")),
               "weight_rank_k": emergence_heatmap_figure(summary, "w_rank_k_frac_end"),
               "weight_erank": emergence_heatmap_figure(summary, "w_erank_frac_end"),
               "gradient_saturation": emergence_heatmap_figure(summary, "g_saturation"),
               "saturation_vs_rank": saturation_figure(summary),
               "rank_k_over_time": emergence_curves_figure(over_time, "w_rank_k_frac")}
    for short, name in picks.items():
        matrix, used = cosines[name]
        figures[f"cosine_{short}"] = gradient_cosine_figure(matrix, run.steps, name, used)
        figures[f"grad_spectra_{short}"] = spectra_time_figure(spectra_over_time(run, name, "grad"), run.steps, name, "grad")
        figures[f"weight_spectra_{short}"] = spectra_time_figure(spectra_over_time(run, name, "weight"), run.steps, name,
                                                                 "weight")
    for stem, fig in figures.items():
        fig.write_html(target / f"{stem}.html", include_plotlyjs="cdn")
    _screenshots(figures, target)
    cols = ["name", "block", "kind", "shape", "w_rank_k_frac_start", "w_rank_k_frac_end", "w_erank_frac_start",
            "w_erank_frac_end", "w_stable_rank_end", "g_erank_frac", "g_saturation", "g_mean_cos", "grad_source"]
    (target / "summary.md").write_text(_markdown(summary[cols]) + "\n")
    by_type = summary.groupby("kind", sort=False)[["w_rank_k_frac_end", "w_erank_frac_end", "w_stable_rank_end",
                                                   "g_saturation"]].mean().reset_index()
    (target / "by_type.md").write_text(_markdown(by_type) + "\n")
    claim = claim_check(summary)
    (target / "claim.md").write_text("\n".join(f"- {k}: {v:.3f}" for k, v in claim.items()) + "\n")
    print("\n".join(f"{k}: {v:.3f}" for k, v in claim.items()))


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, *rows])


def _screenshots(figures: dict, target: Path) -> None:  # type: ignore[type-arg]
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 900, "height": 480})
        for stem, fig in figures.items():
            html = Path(tmp) / f"{stem}.html"
            fig.update_layout(width=880)
            fig.write_html(html, include_plotlyjs=True, full_html=True)
            page.goto(html.as_uri())
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            page.wait_for_timeout(300)
            page.locator(".js-plotly-plot").first.screenshot(path=str(target / f"{stem}.png"))
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/dynamics-small", sys.argv[2] if len(sys.argv) > 2 else "docs/dynamics")
