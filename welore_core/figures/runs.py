"""Figures of evaluation runs: a sweep (PPL against ERR and parameters), the registry's runs of one model, and
a sensitivity scan."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import WeLoreError
from . import palette


def sweep_figure(df: pd.DataFrame) -> go.Figure:
    """PPL vs achieved ERR and PPL vs parameters, one line per strategy, dense as a reference line."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Perplexity vs ERR", "Perplexity vs parameters"))
    dense = df[df["strategy"] == "dense"]
    for strategy, part in df[df["strategy"] != "dense"].groupby("strategy", sort=False):
        part = part.sort_values("achieved_err")
        colour = palette.strategy_colour(str(strategy))
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
            fig.add_hline(y=ppl, line={"dash": "dot", "color": palette.STRATEGY["dense"]}, row=1, col=col,
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
                                   colorscale=palette.COST_SCALE, colorbar={"title": "PPL / dense"},
                                   hovertemplate="%{customdata}: x%{z:.3f} PPL<extra></extra>"))
        fig.update_layout(xaxis_title="layer type", yaxis_title="block")
        fig.update_yaxes(autorange="reversed")
    ratio = float(df["ratio"].iloc[0]) if len(df) else 0.0
    fig.update_layout(title=f"Sensitivity: rank reduced by {100 * ratio:.0f} % one group at a time", height=420)
    return fig


def runs_figure(runs: pd.DataFrame, x: str = "err", y: str = "ppl") -> go.Figure:
    """Recorded evaluations of one model on one data set or task (the rows `evaluation.chart_runs` places): PPL
    (log axis) or accuracy against ERR or parameters, one line per strategy, mode and fine-tuning (a single run is
    a visible marker), the dense model as a labelled baseline across the axis, whose range comes from the data."""
    if x not in ("err", "params") or y not in ("ppl", "acc"):
        raise WeLoreError(f"runs figure axes {x!r}, {y!r}: expected x 'err' or 'params', y 'ppl' or 'acc'")
    what = "PPL" if y == "ppl" else "accuracy"
    fig = go.Figure()
    df = runs.assign(mode=runs["mode"].fillna("dense"),
                     finetuned=runs["finetuned"].fillna("") if "finetuned" in runs else "")
    dense = df[df["strategy"].isna()]
    compressed = df[df["strategy"].notna()]
    dashes = {"lrc": "solid", "all": "dot", "lrc+actsvd": "dashdot", "all+actsvd": "dash"}
    for (strategy, mode, tuned), part in compressed.groupby(["strategy", "mode", "finetuned"], sort=False):
        part = part.sort_values(x)
        name = f"{strategy} ({mode}" + (f", fine-tuned {tuned})" if tuned else ")")
        xs = part["params"] / 1e6 if x == "params" else part["err"]
        fig.add_trace(go.Scatter(
            x=xs, y=part[y], mode="lines+markers", name=name, marker={"size": 9},
            line={"color": palette.strategy_colour(str(strategy)), "dash": dashes.get(str(mode), "dash")},
            customdata=part[["model", "err", "params", "tokens"]].astype(str).to_numpy(),
            hovertemplate=f"{name}<br>%{{customdata[0]}}<br>ERR %{{customdata[1]}} %, "
                          f"%{{customdata[2]}} params<br>{what} %{{y:.3f}}<extra></extra>"))
    lo, hi = _x_range(df, compressed, x)
    if not dense.empty:  # a line trace, not a shape: shapes on a log axis take log10 coordinates
        base = float(dense[y].iloc[0])
        fig.add_trace(go.Scatter(x=[lo, hi], y=[base, base], mode="lines", name=f"dense ({base:.2f})",
                                 line={"dash": "dash", "color": palette.DARK},
                                 hovertemplate=f"dense model: {what} {base:.3f}<extra></extra>"))
        fig.add_annotation(x=hi, y=float(np.log10(base)) if y == "ppl" else base, text=f"dense {base:.2f}",
                           showarrow=False, xanchor="right", yanchor="bottom", font={"color": palette.DARK})
        if x == "params":
            fig.add_trace(go.Scatter(x=dense["params"].iloc[:1] / 1e6, y=[base], mode="markers", name="dense",
                                     marker={"color": palette.DARK, "size": 10, "symbol": "star"}, showlegend=False,
                                     hovertemplate=f"dense<br>%{{x:.2f}} M params, {what} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(xaxis_title="parameters (M)" if x == "params" else "effective rank reduction (%)",
                      yaxis_title="perplexity (log)" if y == "ppl" else "accuracy", yaxis_type="log" if y == "ppl" else
                      "linear", height=400, legend_title_text="strategy (mode)",
                      margin={"t": 30}, xaxis_range=[lo, hi])
    return fig


def _x_range(df: pd.DataFrame, compressed: pd.DataFrame, x: str) -> tuple[float, float]:
    """The x axis of a runs chart from its data: ERR from 0 to past the largest measured (0-100 % with none),
    parameters (M) from below the smallest model to past the dense one."""
    if x == "err":
        top = float(compressed["err"].max()) if not compressed.empty else 100.0
        return 0.0, min(100.0, top * 1.1 + 2.0) if not compressed.empty else 100.0
    params = df["params"].dropna() / 1e6
    if params.empty:
        return 0.0, 1.0
    return float(params.min()) * 0.95, float(params.max()) * 1.02
