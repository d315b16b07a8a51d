"""Sensitivity: truncate one layer type (or one layer) at a time and see what it costs in perplexity."""
from __future__ import annotations


import pandas as pd
import streamlit as st

import welore_core as wc
from dashboard.jobview import job_panel, launch
from dashboard.state import picked_model, placement_setting
from dashboard.text import plain
from dashboard.settings import Params, settings

st.title("Sensitivity")
st.caption("Each group's rank is cut by the chosen ratio (weight SVD) while everything else stays dense; "
           "the bars show perplexity relative to the dense model.")
model, info = picked_model()
cfg = settings()
with st.form("scan"):
    c1, c2, c3, c4 = st.columns(4)
    ratio = c1.slider("Rank reduction", 0.05, 0.95, 0.10, 0.05)
    by = c2.selectbox("Group by", ["type", "layer"], help="layer: one run per layer (blocks x types heatmap)")
    tokens = c3.number_input("Token budget", 64, 1_000_000, cfg.sensitivity_tokens, 512)
    seqlen = c4.number_input("Window (seqlen)", 2, 32768, cfg.eval_seqlen, 64)
    data = st.text_input("Data", value=cfg.eval_data)
    launched = st.form_submit_button("Run scan", type="primary")

store = wc.JobStore()
if launched:
    try:
        device, weights = placement_setting()
        config = wc.EvalConfig(data=data, seqlen=int(seqlen), tokens=int(tokens), device=device, weights_dtype=weights)
        spec = model.strip() or None
        launch(store, "sensitivity", {"model": model or info.label, "ratio": ratio, "by": by},
               lambda progress: wc.sensitivity_of(spec, config, ratio, by, progress), Params.SENSITIVITY_JOB)
    except wc.WeLoreError as problem:
        st.error(plain(problem))


@st.fragment(run_every=1.0)
def follow() -> None:
    state = job_panel(store, Params.SENSITIVITY_JOB)
    if state is not None and state.result:
        df = pd.DataFrame(state.result["rows"])
        st.plotly_chart(wc.figures.sensitivity_figure(df), width="stretch", theme=None)
        st.dataframe(df.sort_values("ppl_increase", ascending=False), hide_index=True, width="stretch")


follow()
