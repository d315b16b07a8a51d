"""Plotly figures of a gradient-dynamics run (pure `*_figure(...) -> go.Figure`, no browser needed).

The paper's Figure 2 row 1 / Figure 9 (`gradient_cosine_figure`), Figure 2 row 2 and Figure 3
(`spectra_time_figure`), and across layers the emergence summary as a blocks × layer types heatmap, the
saturation-vs-rank scatter that tests the paper's claim, per-layer curves over training and the loss.
`export_figures` writes them as HTML files (the CLI's `--html`, the figures in docs/dynamics/).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..dynamics import (DynamicsRun, EmergenceConfig, claim_check, emergence_over_time, emergence_summary,
                        gradient_cosines, spectra_over_time)
from . import palette
from .html import write_reports

METRICS = {
    "w_rank_k_frac_end": "weight rank kept at k / full rank (end)",
    "w_rank_k_frac_start": "weight rank kept at k / full rank (start)",
    "w_erank_frac_end": "weight effective rank / full rank (end)",
    "w_erank_drop": "drop of weight effective rank, start → end",
    "w_stable_rank_end": "weight stable rank (end)",
    "g_saturation": "gradient saturation: cos of consecutive gradients (late)",
    "g_mean_cos": "mean gradient cosine across checkpoints",
    "g_erank_frac": "gradient effective rank / full rank (late)",
    "g_stable_rank": "gradient stable rank (late)",
    "w_rank_k_frac": "weight rank kept at k / full rank",
    "w_erank_frac": "weight effective rank / full rank",
    "w_stable_rank": "weight stable rank",
    "g_rank_k_frac": "gradient rank kept at k / full rank",
    "g_cos_prev": "cosine with the previous checkpoint's gradient",
}


def gradient_cosine_figure(matrix: np.ndarray, steps: np.ndarray, layer: str, source: str = "full") -> go.Figure:
    """Pairwise cosine similarity of one layer's probe gradients across checkpoints (Figure 2, row 1)."""
    labels = [int(s) for s in steps]
    fig = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, zmin=-1, zmax=1, colorscale=palette.COSINE_SCALE, colorbar={"title": "cosine"},
        customdata=np.full(matrix.shape, layer, dtype=object),
        hovertemplate="%{customdata}<br>step %{y} vs step %{x}: cos %{z:.3f}<extra></extra>"))
    how = "stored gradients" if source == "full" else "count sketches"
    fig.update_layout(title=f"{layer}: gradient cosine similarity across checkpoints ({how})",
                      xaxis_title="checkpoint (training step)", yaxis_title="checkpoint (training step)",
                      height=420, margin={"t": 50, "b": 10})
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def spectra_time_figure(spectra: np.ndarray, steps: np.ndarray, layer: str, which: str = "grad",
                        scale: str = "linear") -> go.Figure:
    """Singular values of a layer's gradient or weight per checkpoint (Figure 2 row 2, Figure 3).

    Each row is divided by its largest value, so a heavy-tailed (low-rank) spectrum is a bright band at
    the left and a flat (high-rank) one bright across; `scale="log"` shows log10 of the same ratio.
    """
    top = spectra[:, :1]
    ratio = np.divide(spectra, top, out=np.zeros_like(spectra), where=top > 0)  # (T, r)
    z = np.log10(np.clip(ratio, 1e-4, None)) if scale == "log" else ratio
    what = "gradient" if which == "grad" else "weight"
    fig = go.Figure(go.Heatmap(
        z=z, y=[str(int(s)) for s in steps], colorscale=palette.TIME_SCALE,
        zmin=-4 if scale == "log" else 0, zmax=0 if scale == "log" else 1,
        customdata=np.dstack([np.full(spectra.shape, layer, dtype=object), spectra]),
        colorbar={"title": "log10 s/s_max" if scale == "log" else "s / s_max"},
        hovertemplate="%{customdata[0]}<br>step %{y}, index %{x}: s = %{customdata[1]:.4g} (%{z:.3f})<extra></extra>"))
    fig.update_layout(title=f"{layer}: {what} singular values over training", xaxis_title="singular value index",
                      yaxis_title="checkpoint (training step)", height=420, margin={"t": 50, "b": 10})
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def emergence_heatmap_figure(summary: pd.DataFrame, metric: str = "w_rank_k_frac_end") -> go.Figure:
    """One emergence metric per layer as blocks × layer types (like the paper's Figure 6 layout)."""
    kinds = list(dict.fromkeys(summary["kind"]))
    grid = summary.pivot(index="block", columns="kind", values=metric)[kinds]
    names = summary.pivot(index="block", columns="kind", values="name")[kinds]
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(dtype=float), x=kinds, y=grid.index, customdata=names.to_numpy(), colorscale=palette.REDUCTION_SCALE,
        colorbar={"title": metric}, hovertemplate="%{customdata}<br>" + metric + " = %{z:.3f}<extra></extra>"))
    fig.update_layout(title=METRICS.get(metric, metric), xaxis_title="layer type", yaxis_title="block",
                      height=max(320, 28 * len(grid) + 140), margin={"t": 50, "b": 10})
    fig.update_yaxes(autorange="reversed")
    return fig


def saturation_figure(summary: pd.DataFrame, metric: str = "w_rank_k_frac_end") -> go.Figure:
    """Gradient saturation against the final weight rank, one point per layer: the paper predicts layers
    whose gradients saturate (right) stay high-rank (top), those whose gradients keep changing end low."""
    fig = go.Figure()
    for kind, part in summary.groupby("kind", sort=False):
        fig.add_trace(go.Scatter(
            x=part["g_saturation"], y=part[metric], mode="markers+text", name=str(kind), text=part["block"].astype(str),
            textposition="top center", marker={"size": 9, "color": palette.family_colour(str(kind)),
                                               "symbol": "circle" if str(kind).startswith("self_attn") else "diamond"},
            customdata=part["name"], hovertemplate="%{customdata}<br>saturation %{x:.3f}<br>" + metric
                                                   + " %{y:.3f}<extra></extra>"))
    rho = claim_check(summary, metric)["spearman_saturation_vs_rank"]
    fig.update_layout(title=f"Saturation vs final rank (ρ = {rho:.2f}; labels = block)",
                      xaxis_title=METRICS["g_saturation"], yaxis_title=METRICS.get(metric, metric), height=440,
                      legend_title_text="layer type", margin={"t": 50, "b": 10})
    return fig


def emergence_curves_figure(over_time: pd.DataFrame, metric: str = "w_rank_k_frac") -> go.Figure:
    """A per-layer metric over training, one line per layer coloured by family (attention blue, MLP red)."""
    fig = go.Figure()
    shown: set[str] = set()
    for name, part in over_time.groupby("name", sort=False):
        kind = str(part["kind"].iloc[0])
        family = kind.split(".")[0]
        fig.add_trace(go.Scatter(
            x=part["step"], y=part[metric], mode="lines", name=family, legendgroup=family,
            showlegend=family not in shown, line={"color": palette.family_colour(kind), "width": 1},
            customdata=np.full(len(part), name, dtype=object),
            hovertemplate="%{customdata}<br>step %{x}: %{y:.3f}<extra></extra>"))
        shown.add(family)
    fig.update_layout(title=METRICS.get(metric, metric) + " over training", xaxis_title="training step",
                      yaxis_title=METRICS.get(metric, metric), height=400, margin={"t": 50, "b": 10})
    return fig


def loss_figure(losses: pd.DataFrame, steps: np.ndarray, probe_loss: np.ndarray) -> go.Figure:
    """Training loss per step and the held-out probe batch's loss at each checkpoint."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=losses["step"], y=losses["loss"], mode="lines", name="training batch",
                             line={"width": 1, "color": palette.TRAIN_LOSS}, hovertemplate="step %{x}: %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=steps, y=probe_loss, mode="lines+markers", name="probe batch (held out)",
                             line={"color": palette.PROBE_LOSS}, hovertemplate="step %{x}: probe %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Loss", xaxis_title="training step", yaxis_title="cross-entropy (nats / token)",
                      height=360, margin={"t": 50, "b": 50})
    return fig


def export_figures(run: DynamicsRun, out: str | Path, layers: list[str] | None = None,
                   config: EmergenceConfig | None = None) -> list[Path]:
    """Write the run's figures as HTML into `out`, with plotly.js beside them (they open offline): loss,
    emergence heatmaps and scatter, curves, and for each of `layers` (default: q_proj of the first and last
    block, a middle block's down_proj and up_proj — the paper's Figure 2 picks) the cosine matrix and both
    spectra over time."""
    config = config or EmergenceConfig()
    cosines = gradient_cosines(run, config.source)
    over_time = emergence_over_time(run, config, cosines)
    summary = emergence_summary(run, config, cosines)
    figures: dict[str, go.Figure] = {
        "loss": loss_figure(run.losses(), run.steps, run.scalars("probe_loss")),
        "emergence_rank_k": emergence_heatmap_figure(summary, "w_rank_k_frac_end"),
        "emergence_erank": emergence_heatmap_figure(summary, "w_erank_frac_end"),
        "gradient_saturation": emergence_heatmap_figure(summary, "g_saturation"),
        "saturation_vs_rank": saturation_figure(summary),
        "rank_k_over_time": emergence_curves_figure(over_time, "w_rank_k_frac"),
    }
    for name in layers or default_layers(run):
        matrix, used = cosines[name]
        layer = run.layer(name)
        short = f"block{layer.block}_{layer.kind.replace('.', '_')}"
        figures[f"cosine_{short}"] = gradient_cosine_figure(matrix, run.steps, name, used)
        for which in ("grad", "weight"):
            figures[f"{which}_spectra_{short}"] = spectra_time_figure(spectra_over_time(run, name, which), run.steps,
                                                                      name, which)
    return write_reports(out, figures)


def default_layers(run: DynamicsRun) -> list[str]:
    """The paper's Figure 2 choice on this run: q_proj and k_proj of the first block, then a middle
    block's mlp.down_proj and mlp.up_proj, plus q_proj of the last block (where they exist)."""
    blocks = sorted({l.block for l in run.layers if l.block >= 0})
    middle = blocks[len(blocks) // 2]
    wanted = [(blocks[0], "self_attn.q_proj"), (blocks[0], "self_attn.k_proj"), (middle, "mlp.down_proj"),
              (middle, "mlp.up_proj"), (blocks[-1], "self_attn.q_proj")]
    found = [l.name for b, k in wanted for l in run.layers if l.block == b and l.kind == k]
    return found or [run.layers[0].name]
