"""The tabs of the spectra & rank plan page: plan, spectra, per-layer table, strategy comparison, rank map.

Each tab is a function of the page's spectra and current plan; every number comes from welore_core.
"""
from __future__ import annotations

import html
import json

import pandas as pd
import streamlit as st

import welore_core as wc
from dashboard import cached
from dashboard.text import plain
from dashboard.settings import Keys
from welore_core.figures import compare_figure, reduction_heatmap_figure, spectra_heatmap_figure, spectra_lines_figure

LAYER_COLUMNS = ["name", "block", "kind", "shape", "full_rank", "stable_rank", "effective_rank", "rank", "reduction",
                 "lrc", "rel_error", "dense_params", "factored_params"]


def plan_tab(plan: wc.RankPlan) -> None:
    """The plan by layer type (the heatmap above the tabs shows it by layer)."""
    st.markdown(wc.plan_by_type(plan).round(4).to_html(index=False, border=0, classes="welore-table"), unsafe_allow_html=True)


def spectra_tab(spectra: wc.Spectra, plan: wc.RankPlan, normalization: str) -> None:
    kinds = list(dict.fromkeys(l.kind for l in spectra.layers))
    kind = st.selectbox("Layer type", kinds, key="spectra_kind")
    k = plan.k if plan.config.strategy == "welore" else None
    st.plotly_chart(spectra_heatmap_figure(spectra, kind, normalization, k), width="stretch", theme=None)
    names = [l.name for l in spectra.layers]
    of_kind = [l.name for l in spectra.layers if l.kind == kind]
    default = list(dict.fromkeys([of_kind[0], of_kind[len(of_kind) // 2], of_kind[-1]]))
    chosen = st.multiselect("Layers to plot", names, default=default, key=f"lines_{kind}")
    c1, c2 = st.columns(2)
    scale = c1.radio("Scale", ["linear", "log"], horizontal=True, key="lines_scale")
    values = c2.radio("Values", ["normalised", "raw"], horizontal=True, key="lines_values")
    if chosen:
        st.plotly_chart(spectra_lines_figure(spectra, chosen, normalization, values == "normalised", scale == "log", k),
                        width="stretch", theme=None)


def layer_table(spectra: wc.Spectra, plan: wc.RankPlan) -> pd.DataFrame:
    """One row per layer: spectrum statistics beside the plan's rank, reduction, LRC flag and error."""
    stats = spectra.frame()[["name", "stable_rank", "effective_rank"]]
    return plan.frame().merge(stats, on="name", how="left")[LAYER_COLUMNS]


def layers_tab(spectra: wc.Spectra, plan: wc.RankPlan) -> None:
    df = layer_table(spectra, plan)
    c1, c2, c3 = st.columns([2, 1, 2])
    kinds = c1.multiselect("Layer types", list(dict.fromkeys(df["kind"])), key="table_kinds",
                           placeholder="all types")
    part = c2.radio("Components", ["all", "LRC", "N-LRC"], horizontal=True, key="table_part")
    pattern = c3.text_input("Name contains", key="table_pattern", placeholder="e.g. layers.0. or proj")
    if kinds:
        df = df[df["kind"].isin(kinds)]
    if part != "all":
        df = df[df["lrc"] == (part == "LRC")]
    if pattern:
        df = df[df["name"].str.contains(pattern, regex=False)]
    st.caption(f"{len(df)} layers; click a column header to sort.")
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "reduction": st.column_config.ProgressColumn("reduction", format="%.3f", min_value=0.0, max_value=1.0),
        "stable_rank": st.column_config.NumberColumn(format="%.1f"),
        "effective_rank": st.column_config.NumberColumn(format="%.1f"),
        "rel_error": st.column_config.NumberColumn("rel. error", format="%.4f"),
        "lrc": st.column_config.CheckboxColumn("LRC")})


def compare_tab(spectra: wc.Spectra, plan: wc.RankPlan) -> None:
    a = plan.config.strategy
    c1, c2, c3 = st.columns(3)
    others = [s for s in wc.STRATEGIES if s != a and s not in wc.CALIBRATED]  # those need calibrated spectra (CLI)
    b = c1.selectbox("Compare with", others, key="compare_strategy")
    norm_b = c2.selectbox("its normalisation", list(wc.NORMALIZATIONS), key="compare_norm", disabled=b != "welore")
    match = c3.radio("At equal", ["ERR", "parameters"], horizontal=True, key="compare_match",
                     help="ERR: the same share of rank removed; parameters: the same share of the analysed layers' "
                          "parameters removed, every layer stored the smaller way (the peers' convention)")
    err, removed = plan.achieved_err, plan.totals.params_removed_pct
    target = {"err": err} if match == "ERR" else {"params": removed}
    other = wc.make_plan(spectra, wc.PlanConfig(strategy=b, normalization=norm_b, min_ratio=plan.config.min_ratio,
                                                **target),
                         cached.scores(spectra.fingerprint, spectra.config.setting, b, norm_b, spectra))
    st.caption(f"Both plans at ERR {err:.2f} % (the current plan's)." if match == "ERR" else
               f"Both plans at {removed:.2f} % of the layers' parameters removed (the current plan's).")
    st.dataframe(compare_totals({a: plan, b: other}), hide_index=True, width="stretch")
    st.plotly_chart(compare_figure(plan.frame(), other.frame(), a, b), width="stretch", theme=None)
    left, right = st.columns(2)
    left.plotly_chart(reduction_heatmap_figure(plan.frame()).update_layout(title=a), width="stretch", theme=None)
    right.plotly_chart(reduction_heatmap_figure(other.frame()).update_layout(title=b), width="stretch", theme=None)


def compare_totals(plans: dict[str, wc.RankPlan]) -> pd.DataFrame:
    rows = []
    for label, p in plans.items():
        t = p.totals
        errors = [l.rel_error for l in p.layers]
        rows.append({"strategy": label, "achieved ERR %": round(p.achieved_err, 3),
                     "params removed %": round(t.params_removed_pct, 3), "k": p.k, "LRC": t.lrc,
                     "N-LRC": t.nlrc, "params (M)": t.params_compressed / 1e6,
                     "params, all layers at rank (M)": t.params_all_layers / 1e6,
                     "trainable LRC (M)": t.trainable_params / 1e6, "mean rel. error": t.mean_rel_error,
                     "max rel. error": max(errors) if errors else 0.0})
    return pd.DataFrame(rows)


def rankmap_tab(spectra: wc.Spectra, plan: wc.RankPlan) -> None:
    err = plan.target_err if plan.target_err is not None else plan.achieved_err
    st.download_button("Download rank map (JSON)", json.dumps(wc.rankmap_dict(plan), indent=1) + "\n",
                       file_name=f"rankmap-{spectra.model}-{plan.config.strategy}-{err:g}.json",
                       mime="application/json", key="download_rankmap")
    st.markdown("**Import a rank map** to inspect it against this model, or to compress with it on the "
                "*Compress & evaluate* page.")
    upload = st.file_uploader("Rank map JSON", type=["json"], key="upload_rankmap")
    if upload is None:
        return
    try:
        data = wc.read_rankmap(upload.getvalue())
        imported = wc.plan_from_rankmap(data, spectra)
    except wc.RankMapError as err:
        st.error(f"{plain(upload.name)}: {plain(err)}")
        if err.problems:
            st.code("\n".join(err.problems[:50]) + (f"\n… {len(err.problems) - 50} more" if len(err.problems) > 50 else ""),
                    language=None)
        return
    except wc.WeLoreError as err:
        st.error(f"{plain(upload.name)}: {plain(err)}")
        return
    dense = wc.missing_layers(data, spectra.layers)
    if dense:
        st.info(f"{len(dense)} layers are not in the map and stay dense (e.g. {plain(dense[0])}).")
    t = imported.totals
    st.success(f"{plain(upload.name)} fits {plain(spectra.model)}: ERR {imported.achieved_err:.2f} %, {t.lrc} LRCs, "
               f"{t.params_compressed / 1e6:.1f} M parameters, mean rel. error {t.mean_rel_error:.3f}.")
    st.dataframe(compare_totals({"current plan": plan, upload.name: imported}), hide_index=True, width="stretch")
    st.plotly_chart(reduction_heatmap_figure(imported.frame()).update_layout(title=html.escape(upload.name)),
                    width="stretch", theme=None)
    if st.button("Use this rank map on the Compress & evaluate page", key="apply_rankmap"):
        st.session_state[Keys.APPLIED_RANKMAP] = {"name": upload.name, "data": data}
        st.toast(f"{plain(upload.name)} will be offered on the Compress & evaluate page")
