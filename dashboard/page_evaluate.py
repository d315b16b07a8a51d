"""Compress & evaluate: launch compression + perplexity as a background job, follow it, compare runs.

The job runs in a thread of the server process (never touching Streamlit); its state lives in the run
registry, so the page can be reloaded (the job id is in the URL) and tabs do not share jobs.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

import welore_core as wc
from welore_core.jobs import JobStore
from dashboard import cached
from dashboard.figures import runs_figure
from dashboard.jobview import job_panel, launch

st.title("Compress & evaluate")
model = st.sidebar.text_input("Model", value=os.environ.get("WELORE_MODEL", ""), key="eval_model",
                              placeholder="embedded SmolLM2-135M-Instruct")

with st.form("launch"):
    c1, c2, c3 = st.columns(3)
    strategy = c1.selectbox("Strategy", ["welore", "uniform", "energy", "dense (no compression)"])
    err = c2.number_input("Target ERR (%)", 0.0, 95.0, 20.0, 5.0)
    mode = c3.selectbox("Mode", ["lrc", "all"], help="lrc: factor LRCs only; all: every layer at its rank")
    d1, d2, d3 = st.columns(3)
    data = d1.text_input("Data", value=os.environ.get("WELORE_EVAL_DATA", "wikitext2"),
                         help="wikitext2, c4 (hub) or a path to a text file")
    tokens = d2.number_input("Token budget", 64, 10_000_000, int(os.environ.get("WELORE_EVAL_TOKENS", 8192)), 1024)
    seqlen = d3.number_input("Window (seqlen)", 2, 32768, int(os.environ.get("WELORE_EVAL_SEQLEN", 512)), 64)
    save_to = st.text_input("Save the compressed model to (optional folder)", "")
    launched = st.form_submit_button("Launch", type="primary")

store = JobStore()
if launched:
    try:
        config = wc.EvalConfig(data=data, seqlen=int(seqlen), tokens=int(tokens))
        rankmap = None
        if not strategy.startswith("dense"):
            spectra = cached.spectra(model.strip())
            plan = wc.make_plan(spectra, wc.PlanConfig(strategy=strategy, err=err,
                                                       min_ratio=0.0 if mode == "all" else 0.5))
            rankmap = wc.rankmap_dict(plan)
        target = Path(save_to) if save_to.strip() else None
        spec = model.strip() or None
        compression = wc.CompressionConfig(mode=mode)
        launch(store, "compress-eval", {"model": model, "strategy": strategy, "err": err, "mode": mode, "data": data,
                                        "tokens": int(tokens), "seqlen": int(seqlen)},
               lambda progress: wc.compress_and_evaluate(spec, rankmap, config, compression, progress, save_to=target),
               "job")
    except wc.WeLoreError as problem:
        st.error(str(problem))


@st.fragment(run_every=1.0)
def follow() -> None:
    state = job_panel(store, "job")
    if state is not None and state.result:
        r = state.result
        cols = st.columns(4)
        cols[0].metric("Perplexity", f"{r['ppl']:.3f}")
        cols[1].metric("Parameters", f"{r['params'] / 1e6:.2f} M")
        cols[2].metric("Tokens", f"{r['tokens']}")
        cols[3].metric("From registry", "yes" if r.get("cached") else "no")


follow()

st.subheader("Run registry")
runs = wc.Registry.default().frame("eval")
if runs.empty:
    st.caption("No evaluations recorded yet.")
else:
    st.plotly_chart(runs_figure(runs), width="stretch", theme=None)
    st.dataframe(runs, hide_index=True, width="stretch")
