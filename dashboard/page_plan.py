"""Spectra & rank plan: load a model's spectra, choose ERR, k or parameters removed, see ranks and the LRC
partition, export.

The ERR and k sliders, the totals and the LRC heatmap are one browser-side explorer (dashboard/explorer.py): it
holds the plans of every grid point, so a slider move redraws with no round trip. When a slider rests, its value
comes back to `plan_panel`, a fragment: the parameters slider and the open tab follow, never the plan settings,
the model resolution or the spectra above them.
"""
from __future__ import annotations

import streamlit as st

import welore_core as wc
from dashboard import cached, explorer, plan_tabs
from dashboard.state import picked_model, spectra_with_progress
from dashboard.text import plain
from dashboard.settings import PLAN_STRATEGIES, Keys

TABS = ["Rank plan", "Spectra", "Layers", "Compare strategies", "Rank map"]

st.title("WeLore Studio")
st.caption("Where is this LLM low-rank? Singular values per layer, one global threshold k, layer-adaptive ranks "
           "(WeLore, arXiv 2407.11239).")

spec, info = picked_model()
spectra = spectra_with_progress(spec)
blocks = len({l.block for l in spectra.layers if l.block >= 0})
st.markdown(f"**{plain(spectra.model)}** · {plain(info.architecture)} · {len(spectra.layers)} layers in {blocks} blocks · "
            f"{spectra.total_params / 1e6:.1f} M parameters · fingerprint `{spectra.fingerprint[:12]}`",
            help=spectra.fingerprint)


def _plan(strategy: str, normalization: str, min_ratio: float, scores: wc.Scores | None) -> tuple[wc.RankPlan, str]:
    """The plan the slider moved last decides (ERR, k or parameters); the other two follow it. Returns the plan
    and the target that made it."""
    state = st.session_state
    common = {"strategy": strategy, "normalization": normalization, "min_ratio": min_ratio}
    driver = state[Keys.DRIVER]
    if driver == Keys.K and strategy in wc.THRESHOLD and Keys.K in state:
        return wc.make_plan(spectra, wc.PlanConfig(k=state[Keys.K], **common), scores), Keys.K
    if driver == Keys.PARAMS and Keys.PARAMS in state:
        return wc.make_plan(spectra, wc.PlanConfig(params=state[Keys.PARAMS], **common), scores), Keys.PARAMS
    return wc.make_plan(spectra, wc.PlanConfig(err=state[Keys.ERR], **common), scores), Keys.ERR


def plan_settings() -> None:
    """Strategy, normalisation and LRC ratio: outside the fragment (a change reruns the page; a slider move does
    not redraw them)."""
    c1, c2, c3 = st.columns(3)
    strategy = c1.selectbox("Strategy", PLAN_STRATEGIES, key=Keys.STRATEGY,
                            help="welore: one global threshold on normalised singular values; uniform: the same "
                                 "reduction everywhere; energy: keep a fraction of each layer's energy; greedy: "
                                 "rank where it removes the most energy per parameter")
    c2.selectbox("Normalisation", list(wc.NORMALIZATIONS), key=Keys.NORMALIZATION, disabled=strategy != "welore")
    c3.number_input("LRC min ratio", 0.0, 1.0, wc.LRC_MIN_RATIO, 0.05, key=Keys.MIN_RATIO,
                    help="a layer whose rank is reduced by more than this is an LRC")


@st.fragment
def plan_panel() -> None:
    state = st.session_state
    strategy, normalization, min_ratio = state[Keys.STRATEGY], state[Keys.NORMALIZATION], state[Keys.MIN_RATIO]
    scores = (cached.scores(spectra.fingerprint, spectra.config.setting, strategy, normalization, spectra)
              if strategy != "greedy" else None)
    state.setdefault(Keys.ERR, 50.0)
    state.setdefault(Keys.DRIVER, Keys.ERR)
    plan, driver = _plan(strategy, normalization, min_ratio, scores)
    # the targets that did not drive the plan follow it
    if driver != Keys.ERR:
        state[Keys.ERR] = min(99.0, round(plan.achieved_err, 2))
    if driver != Keys.K:
        state[Keys.K] = float(plan.k or 0.0) if plan.k is not None and plan.k <= 1 else 0.0
    if driver != Keys.PARAMS:
        state[Keys.PARAMS] = min(95.0, round(plan.totals.params_removed_pct, 2))

    def moved(which: str) -> None:
        state[Keys.DRIVER] = which

    grid_id, payload = cached.explorer_grid(spectra.fingerprint, spectra.config.setting, strategy, normalization,
                                            min_ratio, spectra, scores)
    measured = wc.measured_costs(wc.Registry.default().frame("eval"), spectra.model, strategy)
    explorer.explorer(grid_id, payload, plan, driver, measured=measured)
    st.slider("Parameters removed (%)", 0.0, 95.0, step=0.5, key=Keys.PARAMS, on_change=moved, args=(Keys.PARAMS,),
              help="of the analysed layers, each stored the smaller way (A·B or dense): the peers' convention; "
                   "solved exactly on the server, the ERR and k sliders follow")
    # lazy tabs: only the open one runs and is drawn, so a rested slider redraws one tab, not five
    tabs = st.tabs(TABS, key="plan_tab", on_change="rerun")
    if tabs[0].open:
        with tabs[0]:
            plan_tabs.plan_tab(plan)
    if tabs[1].open:
        with tabs[1]:
            plan_tabs.spectra_tab(spectra, plan, normalization if strategy == "welore" else "minmax")
    if tabs[2].open:
        with tabs[2]:
            plan_tabs.layers_tab(spectra, plan)
    if tabs[3].open:
        with tabs[3]:
            plan_tabs.compare_tab(spectra, plan)
    if tabs[4].open:
        with tabs[4]:
            plan_tabs.rankmap_tab(spectra, plan)


st.subheader("Rank plan")
plan_settings()
plan_panel()
