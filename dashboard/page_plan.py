"""Spectra & rank plan: load a model's spectra, choose ERR, k or parameters removed, see ranks and the LRC
partition, export.

Everything a slider moves lives in one fragment (`plan_panel`): a move reruns the controls, the totals and
the open tab only, never the model resolution or the spectra above them.
"""
from __future__ import annotations

import streamlit as st

import welore_core as wc
from dashboard import cached, plan_tabs
from dashboard.state import picked_model, spectra_with_progress

TABS = ["Rank plan", "Spectra", "Layers", "Compare strategies", "Rank map"]
STRATEGIES = [s for s in wc.STRATEGIES if s not in wc.CALIBRATED]  # those plan on calibrated spectra: CLI --calib
K_LABELS = {"welore": "Threshold k (normalised singular value)", "energy": "k: energy kept per layer",
            "uniform": "k: reduction ratio (follows ERR)", "greedy": "k: none (greedy has no threshold)"}

st.title("WeLore Studio")
st.caption("Where is this LLM low-rank? Singular values per layer, one global threshold k, layer-adaptive ranks "
           "(WeLore, arXiv 2407.11239).")

spec, info = picked_model()
spectra = spectra_with_progress(spec)
blocks = len({l.block for l in spectra.layers if l.block >= 0})
st.markdown(f"**{spectra.model}** · {info.architecture} · {len(spectra.layers)} layers in {blocks} blocks · "
            f"{spectra.total_params / 1e6:.1f} M parameters · fingerprint `{spectra.fingerprint[:12]}`",
            help=spectra.fingerprint)


def _plan(strategy: str, normalization: str, min_ratio: float, scores: wc.Scores | None) -> wc.RankPlan:
    """The plan the slider moved last decides (ERR, k or parameters); the other two follow it."""
    state = st.session_state
    common = {"strategy": strategy, "normalization": normalization, "min_ratio": min_ratio}
    if state.driver == "k" and strategy in ("welore", "energy") and "k" in state:
        return wc.make_plan(spectra, wc.PlanConfig(k=state.k, **common), scores)
    if state.driver == "params" and "params" in state:
        return wc.make_plan(spectra, wc.PlanConfig(params=state.params, **common), scores)
    return wc.make_plan(spectra, wc.PlanConfig(err=state.err, **common), scores)


@st.fragment
def plan_panel() -> None:
    state = st.session_state
    c1, c2, c3 = st.columns(3)
    strategy = c1.selectbox("Strategy", STRATEGIES, key="strategy",
                            help="welore: one global threshold on normalised singular values; uniform: the same "
                                 "reduction everywhere; energy: keep a fraction of each layer's energy; greedy: "
                                 "rank where it removes the most energy per parameter")
    normalization = c2.selectbox("Normalisation", list(wc.NORMALIZATIONS), key="normalization",
                                 disabled=strategy != "welore")
    min_ratio = c3.number_input("LRC min ratio", 0.0, 1.0, 0.5, 0.05, key="min_ratio",
                                help="a layer whose rank is reduced by more than this is an LRC")
    scores = (cached.scores(spectra.fingerprint, spectra.config.setting, strategy, normalization, spectra)
              if strategy != "greedy" else None)
    state.setdefault("err", 50.0)
    state.setdefault("driver", "err")
    plan = _plan(strategy, normalization, min_ratio, scores)
    # the two sliders that did not move follow the plan (set before they are drawn in this run)
    if state.driver != "err":
        state.err = min(99.0, round(plan.achieved_err, 2))
    if state.driver != "k":
        state.k = float(plan.k or 0.0) if plan.k is not None and plan.k <= 1 else 0.0
    if state.driver != "params":
        state.params = min(95.0, round(plan.totals.params_removed_pct, 2))

    def moved(which: str) -> None:
        state.driver = which

    s1, s2, s3 = st.columns(3)
    s1.slider("Target effective rank reduction (ERR, %)", 0.0, 99.0, step=0.5, key="err", on_change=moved,
              args=("err",))
    s2.slider(K_LABELS[strategy], 0.0, 1.0, step=0.001, format="%.3f", key="k", on_change=moved, args=("k",),
              disabled=strategy in ("uniform", "greedy"))
    s3.slider("Parameters removed (%)", 0.0, 95.0, step=0.5, key="params", on_change=moved, args=("params",),
              help="of the analysed layers, each stored the smaller way (A·B or dense): the peers' convention")
    totals(plan)
    # lazy tabs: only the open one runs and is drawn, so a slider move redraws one tab, not five
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


def totals(plan: wc.RankPlan) -> None:
    """The plan's totals in two rows of three: wide enough that no value is cut off."""
    t = plan.totals
    k = "-" if plan.k is None else f"{plan.k:.5f}"
    row = st.columns(3)
    row[0].metric("Achieved ERR", f"{plan.achieved_err:.2f} %", help=f"k = {k}")
    row[1].metric("LRC / N-LRC", f"{t.lrc} / {t.nlrc}")
    row[2].metric("Parameters", f"{t.params_compressed / 1e6:.1f} M", f"{100 * (t.param_ratio - 1):.1f} %",
                  delta_color="inverse", help=f"LRCs factored; dense: {t.params_dense / 1e6:.1f} M. Every layer the "
                                              f"smaller way: {t.params_all_layers / 1e6:.1f} M "
                                              f"({t.params_removed_pct:.1f} % of the analysed layers' removed)")
    row = st.columns(3)
    row[0].metric("Trainable (LRC)", f"{t.trainable_params / 1e6:.2f} M",
                  help="parameters of the LRC factors: what WeLore fine-tunes")
    row[1].metric("Memory bf16 / fp32", f"{t.bytes_compressed['bfloat16'] / 2**20:.0f} / "
                  f"{t.bytes_compressed['float32'] / 2**20:.0f} MiB",
                  f"{(t.bytes_compressed['bfloat16'] - t.bytes_dense['bfloat16']) / 2**20:.0f} MiB (bf16)",
                  delta_color="inverse")
    row[2].metric("Mean rel. error", f"{t.mean_rel_error:.3f}", help="mean over layers of ||W - W_r||_F / ||W||_F")


st.subheader("Rank plan")
plan_panel()
