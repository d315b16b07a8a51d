"""Every Plotly figure of the tool, as pure `*_figure(...) -> go.Figure` functions (testable without a
browser, shared by the dashboard and the CLI's HTML reports), drawn in one palette."""
from __future__ import annotations

from . import palette
from .dynamics import (METRICS, default_layers, emergence_curves_figure, emergence_heatmap_figure, export_figures,
                       gradient_cosine_figure, loss_figure, saturation_figure, spectra_time_figure)
from .finetune import loss_curves_figure
from .plan import compare_figure, reduction_heatmap_figure, spectra_heatmap_figure, spectra_lines_figure
from .runs import runs_figure, sensitivity_figure, sweep_figure

__all__ = ["METRICS", "compare_figure", "default_layers", "emergence_curves_figure", "emergence_heatmap_figure",
           "export_figures", "gradient_cosine_figure", "loss_curves_figure", "loss_figure", "palette",
           "reduction_heatmap_figure", "runs_figure", "saturation_figure", "sensitivity_figure",
           "spectra_heatmap_figure", "spectra_lines_figure", "spectra_time_figure", "sweep_figure"]
