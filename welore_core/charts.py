"""Plotly figures shared by the CLI (HTML reports) and the dashboard: pure `*_figure(df) -> go.Figure`."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

STRATEGY_COLOURS = {"welore": "#2ca02c", "uniform": "#d62728", "energy": "#1f77b4", "dense": "#444444"}


def sweep_figure(df: pd.DataFrame) -> go.Figure:
    """PPL vs achieved ERR and PPL vs parameters, one line per strategy, dense as a reference line."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Perplexity vs ERR", "Perplexity vs parameters"))
    dense = df[df["strategy"] == "dense"]
    for strategy, part in df[df["strategy"] != "dense"].groupby("strategy", sort=False):
        part = part.sort_values("achieved_err")
        colour = STRATEGY_COLOURS.get(str(strategy), None)
        hover = "%{customdata}<br>ERR %{x:.1f} %<br>PPL %{y:.3f}<extra></extra>"
        fig.add_trace(go.Scatter(x=part["achieved_err"], y=part["ppl"], mode="lines+markers", name=str(strategy),
                                 line={"color": colour}, customdata=[str(strategy)] * len(part),
                                 hovertemplate=hover), row=1, col=1)
        fig.add_trace(go.Scatter(x=part["params"] / 1e6, y=part["ppl"], mode="lines+markers", name=str(strategy),
                                 line={"color": colour}, showlegend=False, customdata=part["achieved_err"],
                                 hovertemplate="%{x:.1f} M params (ERR %{customdata:.1f} %)<br>PPL %{y:.3f}<extra></extra>"),
                      row=1, col=2)
    if not dense.empty:
        ppl = float(dense["ppl"].iloc[0])
        for col in (1, 2):
            fig.add_hline(y=ppl, line={"dash": "dot", "color": STRATEGY_COLOURS["dense"]}, row=1, col=col,
                          annotation_text=f"dense {ppl:.2f}" if col == 1 else None)
    fig.update_yaxes(title_text="perplexity (log)", type="log")
    fig.update_xaxes(title_text="achieved ERR (%)", row=1, col=1)
    fig.update_xaxes(title_text="parameters (M)", row=1, col=2)
    fig.update_layout(height=420, legend_title_text="strategy", margin={"t": 50})
    return fig


def sensitivity_figure(df: pd.DataFrame) -> go.Figure:
    """PPL increase when one group is truncated: a bar per layer type, or a blocks x types heatmap."""
    if (df["block"] < 0).all():
        fig = go.Figure(go.Bar(x=df["kind"], y=df["ppl_increase"], hovertemplate="%{x}: x%{y:.3f} PPL<extra></extra>"))
        fig.update_layout(xaxis_title="layer type truncated", yaxis_title="PPL / dense PPL")
    else:
        kinds = list(dict.fromkeys(df["kind"]))
        grid = df.pivot(index="block", columns="kind", values="ppl_increase")[kinds]
        names = df.pivot(index="block", columns="kind", values="group")[kinds]
        fig = go.Figure(go.Heatmap(z=grid.to_numpy(dtype=float), x=kinds, y=grid.index, customdata=names.to_numpy(),
                                   colorscale="Reds", colorbar={"title": "PPL / dense"},
                                   hovertemplate="%{customdata}: x%{z:.3f} PPL<extra></extra>"))
        fig.update_layout(xaxis_title="layer type", yaxis_title="block")
        fig.update_yaxes(autorange="reversed")
    ratio = float(df["ratio"].iloc[0]) if len(df) else 0.0
    fig.update_layout(title=f"Sensitivity: rank reduced by {100 * ratio:.0f} % one group at a time", height=420)
    return fig
