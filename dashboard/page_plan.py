"""Spectra & rank plan: load a model's spectra, choose ERR or k, see ranks and the LRC partition, export."""
from __future__ import annotations

import streamlit as st

import welore_core as wc
from dashboard import cached, plan_tabs
from dashboard.state import picked_model, spectra_with_progress

TABS = ["Rank plan", "Spectra", "Layers", "Compare strategies", "Rank map"]

st.title("WeLore Studio")
st.caption("Where is this LLM low-rank? Singular values per layer, one global threshold k, layer-adaptive ranks "
           "(WeLore, arXiv 2407.11239).")

spec, info = picked_model()
spectra = spectra_with_progress(spec)

blocks = len({l.block for l in spectra.layers if l.block >= 0})
cols = st.columns(4)
cols[0].metric("Model", spectra.model, help=info.architecture)
cols[1].metric("Layers analysed", f"{len(spectra.layers)} in {blocks} blocks")
cols[2].metric("Parameters", f"{spectra.total_params / 1e6:.1f} M")
cols[3].metric("Fingerprint", spectra.fingerprint[:12], help=spectra.fingerprint)

st.subheader("Rank plan")
c1, c2, c3 = st.columns(3)
strategy = c1.selectbox("Strategy", list(wc.STRATEGIES), key="strategy",
                        help="welore: one global threshold on normalised singular values; uniform: the same "
                             "reduction everywhere; energy: keep a fraction of each layer's energy")
normalization = c2.selectbox("Normalisation", list(wc.NORMALIZATIONS), key="normalization",
                             disabled=strategy != "welore")
min_ratio = c3.number_input("LRC min ratio", 0.0, 1.0, 0.5, 0.05, key="min_ratio",
                            help="a layer whose rank is reduced by more than this is an LRC")
scores = cached.scores(spectra.fingerprint, spectra.config.setting, strategy, normalization, spectra)

# ERR and k are linked both ways: the slider moved last decides, the other follows
state = st.session_state
state.setdefault("err", 50.0)
state.setdefault("driver", "err")


def _err_moved() -> None:
    state.driver = "err"


def _k_moved() -> None:
    state.driver = "k"
    if strategy != "uniform":
        state.err = min(99.0, round(wc.err_for_k(scores, state.k), 2))


if state.driver == "k" and strategy != "uniform" and "k" in state:
    config = wc.PlanConfig(strategy=strategy, err=None, k=state.k, normalization=normalization, min_ratio=min_ratio)
else:
    config = wc.PlanConfig(strategy=strategy, err=state.err, normalization=normalization, min_ratio=min_ratio)
plan = wc.make_plan(spectra, config, scores)
if state.driver == "err" or strategy == "uniform":
    state.k = float(plan.k or 0.0)
s1, s2 = st.columns(2)
s1.slider("Target effective rank reduction (ERR, %)", 0.0, 99.0, step=0.5, key="err", on_change=_err_moved)
s2.slider({"welore": "Threshold k (normalised singular value)", "energy": "k: energy kept per layer",
           "uniform": "k: reduction ratio (follows ERR)"}[strategy], 0.0, 1.0, step=0.001, format="%.3f", key="k",
          on_change=_k_moved, disabled=strategy == "uniform")
t = plan.totals

m = st.columns(6)
m[0].metric("Achieved ERR", f"{plan.achieved_err:.2f} %", help=f"k = {plan.k:.5f}")
m[1].metric("LRC / N-LRC", f"{t.lrc} / {t.nlrc}")
m[2].metric("Parameters", f"{t.params_compressed / 1e6:.1f} M", f"{100 * (t.param_ratio - 1):.1f} %",
            delta_color="inverse", help=f"dense: {t.params_dense / 1e6:.1f} M in the analysed layers")
m[3].metric("Trainable (LRC)", f"{t.trainable_params / 1e6:.2f} M",
            help="parameters of the LRC factors: what WeLore fine-tunes")
m[4].metric("Memory bf16 / fp32", f"{t.bytes_compressed['bfloat16'] / 2**20:.0f} / "
            f"{t.bytes_compressed['float32'] / 2**20:.0f} MiB",
            f"{(t.bytes_compressed['bfloat16'] - t.bytes_dense['bfloat16']) / 2**20:.0f} MiB (bf16)",
            delta_color="inverse")
m[5].metric("Mean rel. error", f"{t.mean_rel_error:.3f}", help="mean over layers of ||W - W_r||_F / ||W||_F")

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
