"""Spectra & rank plan: load a model's spectra, choose ERR, k or parameters removed, see ranks and the LRC
partition, export.

Everything a slider moves lives in one fragment (`plan_panel`): a move reruns the three sliders, the totals
and the open tab only, never the plan settings, the model resolution or the spectra above them. The totals
are one element (and the per-type table of the plan tab another): each element a move redraws costs the
browser time (bench/bench_dashboard_ab.py).
"""
from __future__ import annotations

from html import escape

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


def plan_settings() -> None:
    """Strategy, normalisation and LRC ratio: outside the fragment (a change reruns the page; a slider move does
    not redraw them)."""
    c1, c2, c3 = st.columns(3)
    strategy = c1.selectbox("Strategy", STRATEGIES, key="strategy",
                            help="welore: one global threshold on normalised singular values; uniform: the same "
                                 "reduction everywhere; energy: keep a fraction of each layer's energy; greedy: "
                                 "rank where it removes the most energy per parameter")
    c2.selectbox("Normalisation", list(wc.NORMALIZATIONS), key="normalization", disabled=strategy != "welore")
    c3.number_input("LRC min ratio", 0.0, 1.0, 0.5, 0.05, key="min_ratio",
                    help="a layer whose rank is reduced by more than this is an LRC")


@st.fragment
def plan_panel() -> None:
    state = st.session_state
    strategy, normalization, min_ratio = state.strategy, state.normalization, state.min_ratio
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


STYLE = """<style>  /* the totals, and the plan tab's per-type table (plan_tabs.plan_tab) */
.welore-metrics {display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 1rem 1.5rem; margin: .25rem 0 1rem}
.welore-metric .label {font-size: .875rem; opacity: .8}
.welore-metric .value {font-size: 2.25rem; line-height: 1.25; white-space: nowrap}
.welore-metric .delta {font-size: .85rem; color: #09ab3b}
.welore-metric .delta.up {color: #ff2b2b}
table.welore-table {border-collapse: collapse; font-size: .875rem; width: 100%}
table.welore-table th, table.welore-table td {padding: .25rem .5rem; border-bottom: 1px solid rgba(128, 128, 128, .25)}
table.welore-table td {text-align: right; font-variant-numeric: tabular-nums}
table.welore-table td:first-child, table.welore-table th {text-align: left}
</style>"""


def _metric(label: str, value: str, help: str = "", delta: str = "", worse: bool = False) -> str:
    d = f'<div class="delta{" up" if worse else ""}">{escape(delta)}</div>' if delta else ""
    return (f'<div class="welore-metric" title="{escape(help)}"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div>{d}</div>')


def totals(plan: wc.RankPlan) -> None:
    """The plan's totals, six values in two rows of three, as one element (a slider move redraws one element,
    not twelve) wide enough that no value is cut off."""
    t = plan.totals
    k = "-" if plan.k is None else f"{plan.k:.5f}"
    change = 100 * (t.param_ratio - 1)
    saved = (t.bytes_compressed["bfloat16"] - t.bytes_dense["bfloat16"]) / 2**20
    cells = [
        _metric("Achieved ERR", f"{plan.achieved_err:.2f} %", f"k = {k}"),
        _metric("LRC / N-LRC", f"{t.lrc} / {t.nlrc}", "layers factored (LRC) / kept dense (N-LRC)"),
        _metric("Parameters", f"{t.params_compressed / 1e6:.1f} M",
                f"LRCs factored; dense: {t.params_dense / 1e6:.1f} M. Every layer the smaller way: "
                f"{t.params_all_layers / 1e6:.1f} M ({t.params_removed_pct:.1f} % of the analysed layers' removed)",
                f"{change:+.1f} %", change > 0),
        _metric("Trainable (LRC)", f"{t.trainable_params / 1e6:.2f} M",
                "parameters of the LRC factors: what WeLore fine-tunes"),
        _metric("Memory bf16 / fp32", f"{t.bytes_compressed['bfloat16'] / 2**20:.0f} / "
                f"{t.bytes_compressed['float32'] / 2**20:.0f} MiB", "weights of the analysed model in each dtype",
                f"{saved:+.0f} MiB (bf16)", saved > 0),
        _metric("Mean rel. error", f"{t.mean_rel_error:.3f}", "mean over layers of ||W - W_r||_F / ||W||_F"),
    ]
    st.markdown(STYLE + '<div class="welore-metrics">' + "".join(cells) + "</div>", unsafe_allow_html=True)


st.subheader("Rank plan")
plan_settings()
plan_panel()
