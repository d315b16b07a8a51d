"""Spectra & rank plan: load a model's spectra, choose ERR or k, see ranks and the LRC partition, export."""
from __future__ import annotations

import json
import os

import streamlit as st

import welore_core as wc
from dashboard import cached
from dashboard.figures import reduction_heatmap_figure, spectra_heatmap_figure

st.title("WeLore Studio")
st.caption("Where is this LLM low-rank? Singular values per layer, one global threshold k, layer-adaptive ranks "
           "(WeLore, arXiv 2407.11239).")

with st.sidebar:
    st.header("Model")
    model = st.text_input("Model", value=os.environ.get("WELORE_MODEL", ""),
                          placeholder="embedded SmolLM2-135M-Instruct",
                          help="Empty = the embedded SmolLM2-135M-Instruct. Or a model folder, a .gguf, a "
                               ".safetensors(.index.json) file to stream, or a hub id.")
    dtype = st.selectbox("SVD precision", ["float32", "float64"])

bar = st.progress(0.0, text="loading spectra …")
try:
    spectra = cached.spectra(model.strip(), dtype, "svdvals",
                             progress=lambda done, total, name: bar.progress(done / total, text=f"SVD {done}/{total}: {name}"))
except wc.WeLoreError as err:
    bar.empty()
    st.error(str(err))
    st.stop()
bar.empty()
for note in spectra.notes:
    st.warning(note)

blocks = len({l.block for l in spectra.layers if l.block >= 0})
cols = st.columns(4)
cols[0].metric("Model", spectra.model)
cols[1].metric("Layers analysed", f"{len(spectra.layers)} in {blocks} blocks")
cols[2].metric("Parameters", f"{spectra.total_params / 1e6:.1f} M")
cols[3].metric("Fingerprint", spectra.fingerprint[:12])

st.subheader("Rank plan")
c1, c2, c3 = st.columns(3)
strategy = c1.selectbox("Strategy", list(wc.STRATEGIES), help="welore: one global threshold on normalised "
                        "singular values; uniform: the same reduction everywhere; energy: keep a fraction of energy")
normalization = c2.selectbox("Normalisation", list(wc.NORMALIZATIONS), disabled=strategy != "welore")
min_ratio = c3.number_input("LRC min ratio", 0.0, 1.0, 0.5, 0.05, help="a layer reduced by more than this is an LRC")
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
err = plan.target_err if plan.target_err is not None else plan.achieved_err
t = plan.totals

m = st.columns(5)
m[0].metric("Achieved ERR", f"{plan.achieved_err:.2f} %", help=f"k = {plan.k:.5f}")
m[1].metric("LRC / N-LRC", f"{t['lrc']} / {t['nlrc']}")
m[2].metric("Parameters", f"{t['params_compressed'] / 1e6:.1f} M", f"{100 * (t['param_ratio'] - 1):.1f} %",
            delta_color="inverse")
m[3].metric("Trainable (LRC)", f"{t['trainable_params'] / 1e6:.2f} M")
m[4].metric("bf16 memory", f"{t['bytes_compressed']['bfloat16'] / 2**20:.0f} MiB",
            f"{(t['bytes_compressed']['bfloat16'] - t['bytes_dense']['bfloat16']) / 2**20:.0f} MiB", delta_color="inverse")

frame = plan.frame()
left, right = st.columns(2)
left.plotly_chart(reduction_heatmap_figure(frame), width="stretch", theme=None)
kinds = list(dict.fromkeys(l.kind for l in spectra.layers))
kind = right.selectbox("Layer type", kinds)
right.plotly_chart(spectra_heatmap_figure(spectra, kind, normalization,
                                          plan.k if strategy == "welore" else None), width="stretch", theme=None)

st.dataframe(wc.plan_by_type(plan), hide_index=True, width="stretch")
st.download_button("Download rank map (JSON)", json.dumps(wc.rankmap_dict(plan), indent=1),
                   file_name=f"rankmap-{spectra.model}-{strategy}-{err:g}.json", mime="application/json")
