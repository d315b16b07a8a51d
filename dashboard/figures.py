"""Pure Plotly figure builders (`*_figure(...) -> go.Figure`), testable without a browser."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

import welore_core as wc

LRC_COLOUR = "#2ca02c"
NLRC_COLOUR = "#d62728"


def reduction_heatmap_figure(plan_frame: pd.DataFrame) -> go.Figure:
    """Blocks x layer types of rank reduction (the paper's Figure 6); LRCs marked with a dot."""
    kinds = list(dict.fromkeys(plan_frame["kind"]))
    grid = plan_frame.pivot(index="block", columns="kind", values="reduction")[kinds]
    lrc = plan_frame.pivot(index="block", columns="kind", values="lrc")[kinds]
    names = plan_frame.pivot(index="block", columns="kind", values="name")[kinds]
    ranks = plan_frame.pivot(index="block", columns="kind", values="rank")[kinds]
    text = np.where(lrc.to_numpy(dtype=bool), "●", "")
    fig = go.Figure(go.Heatmap(
        z=100 * grid.to_numpy(dtype=float), x=kinds, y=grid.index, text=text, texttemplate="%{text}",
        customdata=np.dstack([names.to_numpy(), ranks.to_numpy(), np.where(text == "●", "LRC", "N-LRC")]),
        hovertemplate="%{customdata[0]}<br>rank %{customdata[1]}, reduction %{z:.1f} %<br>%{customdata[2]}<extra></extra>",
        colorscale="Viridis", zmin=0, zmax=100, colorbar={"title": "reduction %"}))
    fig.update_layout(xaxis_title="layer type", yaxis_title="block", height=max(320, 18 * len(grid) + 120),
                      margin={"t": 30, "b": 10}, title="Rank reduction per layer (● = LRC, factored and fine-tuned)")
    fig.update_yaxes(autorange="reversed")
    return fig


def spectra_heatmap_figure(spectra: wc.Spectra, kind: str, normalization: str = "minmax",
                           k: float | None = None) -> go.Figure:
    """Normalised singular values of one layer type: rows = blocks, columns = index (the paper's Figure 4)."""
    layers = [l for l in spectra.layers if l.kind == kind]
    width = max(l.full_rank for l in layers)
    z = np.full((len(layers), width), np.nan)
    for row, layer in enumerate(layers):
        values = wc.normalize(spectra.values[layer.name], normalization)
        z[row, : values.size] = values
    fig = go.Figure(go.Heatmap(z=z, y=[l.block for l in layers], colorscale="Plasma", zmin=0, zmax=1,
                               customdata=np.array([[l.name] * width for l in layers]),
                               hovertemplate="%{customdata}<br>index %{x}: %{z:.3f}<extra></extra>",
                               colorbar={"title": "normalised s"}))
    if k is not None:
        kept = [int(np.sum(wc.normalize(spectra.values[l.name], normalization) >= k)) for l in layers]
        fig.add_trace(go.Scatter(x=kept, y=[l.block for l in layers], mode="lines", line={"color": "cyan", "width": 2},
                                 name=f"kept rank at k = {k:.3f}", hovertemplate="block %{y}: rank %{x}<extra></extra>"))
    fig.update_layout(title=f"{kind}: normalised singular values per block", xaxis_title="singular value index",
                      yaxis_title="block", height=360, margin={"t": 40, "b": 10}, showlegend=k is not None,
                      legend={"orientation": "h", "y": -0.25})
    fig.update_yaxes(autorange="reversed")
    return fig


def runs_figure(runs: pd.DataFrame) -> go.Figure:
    """Recorded evaluations: PPL against parameters, one colour per strategy (dense runs in grey)."""
    fig = go.Figure()
    df = runs.assign(strategy=runs["strategy"].fillna("dense"))
    colours = {"welore": LRC_COLOUR, "uniform": NLRC_COLOUR, "energy": "#1f77b4", "dense": "#444444"}
    for strategy, part in df.groupby("strategy", sort=False):
        fig.add_trace(go.Scatter(
            x=part["params"] / 1e6, y=part["ppl"], mode="markers", name=str(strategy),
            marker={"color": colours.get(str(strategy), "#9467bd"), "size": 9},
            customdata=part[["model", "err", "dataset", "tokens"]].astype(str).to_numpy(),
            hovertemplate="%{customdata[0]}<br>ERR %{customdata[1]} %<br>%{x:.2f} M params, PPL %{y:.3f}"
                          "<br>%{customdata[2]}, %{customdata[3]} tokens<extra></extra>"))
    fig.update_layout(xaxis_title="parameters (M)", yaxis_title="perplexity (log)", yaxis_type="log", height=380,
                      legend_title_text="strategy", margin={"t": 30})
    return fig
