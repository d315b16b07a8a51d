"""Figures of fine-tuning runs: training loss per mode, overlaid (the paper's Figures 5 and 8)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from . import palette


def loss_curves_figure(df: pd.DataFrame) -> go.Figure:
    """Training loss against step, one line per run, coloured by mode (the paper's Figure 5 / Figure 8 view)."""
    fig = go.Figure()
    shown: set[str] = set()
    for _, row in df.iterrows():
        curve = row["loss_curve"] or []
        if not curve:
            continue
        mode = str(row["mode"])
        hover = f"{mode} (run {row['id']})<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>"
        fig.add_trace(go.Scatter(x=[p[0] for p in curve], y=[p[1] for p in curve], mode="lines", name=mode,
                                 legendgroup=mode, showlegend=mode not in shown,
                                 line={"color": palette.MODE.get(mode, palette.OTHER)}, hovertemplate=hover))
        shown.add(mode)
    fig.update_layout(title="Training loss per mode", xaxis_title="optimizer step", yaxis_title="loss (nats/token)",
                      legend_title_text="mode", height=420, margin={"t": 50})
    return fig
