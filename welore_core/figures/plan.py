"""Figures of spectra and rank plans: the paper's Figure 6 (reduction per layer, LRCs marked), Figure 4
(normalised spectra per layer type, with the kept rank at k), spectra as lines, and two plans compared."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..compression.plan import kept_rank, normalize
from ..compression.spectra import Spectra
from ..errors import WeLoreError
from . import palette


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
        colorscale=palette.REDUCTION_SCALE, zmin=0, zmax=100, colorbar={"title": "reduction %"}))
    fig.update_layout(xaxis_title="layer type", yaxis_title="block", height=max(320, 18 * len(grid) + 120),
                      margin={"t": 30, "b": 10}, title="Rank reduction per layer (● = LRC, factored and fine-tuned)")
    fig.update_yaxes(autorange="reversed")
    return fig


def spectra_heatmap_figure(spectra: Spectra, kind: str, normalization: str = "minmax",
                           k: float | None = None, max_columns: int = 1024) -> go.Figure:
    """Normalised singular values of one layer type: rows = blocks, columns = index (the paper's Figure 4).

    Wider than `max_columns` (7B MLPs have 4096-11008 values), the columns are evenly spaced indices: the
    values are sorted, so this keeps the curve's shape while the figure stays small enough to draw fast.
    """
    layers = [l for l in spectra.layers if l.kind == kind]
    if not layers:
        raise WeLoreError(f"layer type {kind!r}: no such type in {spectra.model}")
    width = max(l.full_rank for l in layers)
    columns = np.unique(np.linspace(0, width - 1, min(width, max_columns)).round().astype(int))
    z = np.full((len(layers), columns.size), np.nan)
    normalized = [normalize(spectra.values[l.name], normalization) for l in layers]
    for row, values in enumerate(normalized):
        inside = columns < values.size
        z[row, inside] = values[columns[inside]]
    blocks = [l.block for l in layers]
    hover = _name_template([l.name for l in layers], blocks)
    heat: dict[str, object] = {"hovertemplate": hover + "<br>index %{x}: %{z:.3f}<extra></extra>"}
    if "%{y}" not in hover:  # names do not follow one pattern: carry them per cell
        heat = {"customdata": np.array([[l.name] * columns.size for l in layers]),
                "hovertemplate": "%{customdata}<br>index %{x}: %{z:.3f}<extra></extra>"}
    fig = go.Figure(go.Heatmap(z=z, x=columns, y=blocks, colorscale=palette.SPECTRA_SCALE, zmin=0, zmax=1,
                               colorbar={"title": "normalised s"}, **heat))
    if k is not None:
        kept = [kept_rank(np.sort(normalize(spectra.values[l.name], normalization)), k) for l in layers]
        fig.add_trace(go.Scatter(x=kept, y=blocks, mode="lines", line={"color": palette.THRESHOLD, "width": 2},
                                 name=f"kept rank at k = {k:.3f}", hovertemplate="block %{y}: rank %{x}<extra></extra>"))
    fig.update_layout(title=f"{kind}: normalised singular values per block", xaxis_title="singular value index",
                      yaxis_title="block", height=360, margin={"t": 40, "b": 10}, showlegend=k is not None,
                      legend={"orientation": "h", "y": -0.25})
    fig.update_yaxes(autorange="reversed")
    return fig


def _name_template(names: list[str], blocks: list[int]) -> str:
    """'model.layers.%{y}.mlp.up_proj' when every name is one pattern around its block number, else ''."""
    if not names:
        return ""
    first, block = names[0], str(blocks[0])
    marker = f".{block}."
    if marker not in first:
        return ""
    head, tail = first.split(marker, 1)
    if all(n == f"{head}.{b}.{tail}" for n, b in zip(names, blocks)):
        return f"{head}.%{{y}}.{tail}"
    return ""


def spectra_lines_figure(spectra: Spectra, names: list[str], normalization: str = "minmax",
                         normalized: bool = True, log: bool = False, k: float | None = None) -> go.Figure:
    """Chosen layers' spectra as lines (index vs value), normalised or raw, on a linear or log axis."""
    fig = go.Figure()
    for name in names:
        if name not in spectra.values:
            raise WeLoreError(f"layer {name!r}: not in the spectra of {spectra.model}")
        s = spectra.values[name].astype(np.float64)
        y = normalize(s, normalization) if normalized else s
        if log:
            y = np.where(y > 0, y, np.nan)  # a log axis cannot show the min-max zero
        fig.add_trace(go.Scattergl(x=np.arange(y.size), y=y, mode="lines", name=name,
                                   hovertemplate=f"{name}<br>index %{{x}}: %{{y:.4g}}<extra></extra>"))
    if k is not None and normalized:
        fig.add_hline(y=k, line={"dash": "dash", "color": palette.REFERENCE}, annotation_text=f"k = {k:.3f}")
    fig.update_layout(xaxis_title="singular value index",
                      yaxis_title=f"{'normalised ' if normalized else ''}singular value{' (log)' if log else ''}",
                      yaxis_type="log" if log else "linear", height=380, margin={"t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def compare_figure(a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    """Mean rank reduction per layer type under two plans (grouped bars; hover gives LRC counts)."""
    fig = go.Figure()
    for frame, label, colour in ((a, label_a, palette.GREEN), (b, label_b, palette.BLUE)):
        g = frame.groupby("kind", sort=False).agg(reduction=("reduction", "mean"), lrc=("lrc", "sum"),
                                                   layers=("name", "count"), rel_error=("rel_error", "mean"))
        fig.add_trace(go.Bar(x=g.index, y=100 * g["reduction"], name=label, marker_color=colour,
                             customdata=np.stack([g["lrc"], g["layers"], g["rel_error"]], axis=1),
                             hovertemplate=f"{label}<br>%{{x}}: mean reduction %{{y:.1f}} %<br>"
                                           "LRC %{customdata[0]} of %{customdata[1]}, mean rel. error "
                                           "%{customdata[2]:.3f}<extra></extra>"))
    fig.update_layout(barmode="group", xaxis_title="layer type", yaxis_title="mean rank reduction (%)",
                      height=360, margin={"t": 30, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig
