"""Gradient dynamics: does low-rank structure emerge where the paper says? (arXiv 2407.11239 §2)

Pick a stored `welore dynamics` run (the URL's ?run=, $WELORE_DYNAMICS_RUN, the run registry, or a
folder typed in), see across layers how low-rank each weight became and how saturated its gradient is,
and for one layer the gradient cosine-similarity matrix and the gradient and weight spectra over
training. A new run can be launched as a background job (state in the registry, id in the URL).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

import welore_core as wc
from dashboard import cached
from dashboard.jobview import job_panel, launch
from dashboard.text import plain
from dashboard.settings import Params, settings
from welore_core.figures import (METRICS, emergence_curves_figure, emergence_heatmap_figure, gradient_cosine_figure,
                                 loss_figure, saturation_figure, spectra_time_figure)

st.title("Gradient dynamics")
st.caption("Pretrain a small LLaMA from scratch and watch, per layer, whether its gradients keep changing and "
           "its weights become low-rank (WeLore §2, Figures 2, 3 and 9).")


def _known_runs() -> list[str]:
    found = [st.query_params.get(Params.DYNAMICS_RUN, ""), cfg.dynamics_run]
    registry = wc.Registry.default().frame("dynamics")
    found += [str(m) for m in registry["model"]] if not registry.empty else []
    return [f for f in dict.fromkeys(found) if f and wc.RunFolder.of(f).is_run()]


cfg = settings()
store = wc.JobStore()
with st.sidebar:
    st.header("Run")
    known = _known_runs()
    choice = (st.selectbox("Stored run", known, help="from the URL, $WELORE_DYNAMICS_RUN or the run registry")
              if known else None)
    typed = st.text_input("Or a run folder", "", placeholder="cache/dynamics/small-…")
    st.header("Scoring")
    k = st.slider("Threshold k (normalised singular value)", 0.01, 0.9, 0.1, 0.01,
                  help="rank kept = number of min-max normalised singular values >= k, as in a WeLore plan")
    tail = st.slider("Late training = last fraction of checkpoints", 0.1, 1.0, 0.5, 0.05)
    source = st.selectbox("Gradients for cosines", ["auto", "full", "sketch"],
                          help="full: stored float16 gradients (layers up to full_max entries; across layers, "
                               "the others use their sketch); sketch: count sketches (every layer)")

with st.expander("Launch a new run", expanded=not known and not typed):
    with st.form("launch"):
        c1, c2, c3, c4 = st.columns(4)
        wanted = cfg.dynamics_preset
        preset = c1.selectbox("Model preset", wc.presets(), index=wc.presets().index(wanted) if wanted in wc.presets() else 0)
        steps = c2.number_input("Steps (0 = preset's)", 0, 1_000_000, cfg.dynamics_steps)
        every = c3.number_input("Record every (0 = preset's)", 0, 100_000, cfg.dynamics_every)
        seed = c4.number_input("Seed", 0, 2**31 - 1, 0)
        data = st.text_input("Data", cfg.dynamics_data,
                             help="tinyshakespeare, wikitext2, c4, hub:<dataset>[:<config>] or a text file")
        out = st.text_input("Run folder (empty = cache/dynamics/<preset>-<settings hash>)", "")
        launched = st.form_submit_button("Launch", type="primary")
    if launched:
        try:
            config = wc.DynamicsConfig(preset=preset, data=data.strip(), steps=int(steps) or None,
                                    every=int(every) or None, seed=int(seed))
            target = Path(out.strip()) if out.strip() else wc.default_folder(config)
            launch(store, "dynamics", {"preset": preset, "data": data, "steps": config.steps, "folder": str(target)},
                   lambda progress: wc.run_dynamics(config, target, progress), Params.DYNAMICS_JOB)
        except wc.WeLoreError as problem:
            st.error(plain(problem))

    @st.fragment(run_every=1.0)
    def follow() -> None:
        if not st.query_params.get(Params.DYNAMICS_JOB):
            return
        state = job_panel(store, Params.DYNAMICS_JOB)
        if state is not None and state.result:
            folder = state.result["folder"]
            st.success(f"Run finished: {plain(folder)} ({state.result['params'] / 1e6:.2f}M parameters, "
                       f"probe loss {state.result['probe_loss']:.3f})")
            if st.query_params.get(Params.DYNAMICS_RUN) != folder:
                st.query_params[Params.DYNAMICS_RUN] = folder
                st.rerun()

    follow()

folder = typed.strip() or choice
if not folder:
    st.info("No run yet: launch one above, or run `welore dynamics --config small -o DIR` and type DIR in the sidebar.")
    st.stop()
try:
    run = wc.load_run(folder)
    stamp = cached.dynamics_stamp(folder)
    # "full" cannot hold for layers too large to store whole: across layers it means "full where stored"
    summary, over_time, claim = cached.dynamics_across(folder, stamp, k, "minmax", tail, "auto" if source == "full" else source)
except wc.WeLoreError as problem:
    st.error(plain(problem))
    st.stop()

meta = run.meta
cfg = meta["config"]
cols = st.columns(5)
cols[0].metric("Preset", str(cfg["preset"]))
cols[1].metric("Parameters", f"{meta['params'] / 1e6:.2f} M")
cols[2].metric("Steps", f"{meta['step']} / {cfg['steps']}")
cols[3].metric("Checkpoints", f"{len(run.steps)}")
cols[4].metric("Probe loss", f"{run.scalars('probe_loss')[-1]:.3f}")
if meta.get("status") != "done":
    st.info(f"This run is {plain(meta.get('status'))} at step {plain(meta['step'])} of {plain(cfg['steps'])}"
            + (f" ({plain(meta['note'])})" if meta.get("note") else "") + "; rerun it with the same folder to continue.")
st.plotly_chart(loss_figure(run.losses(), run.steps, run.scalars("probe_loss")), width="stretch", theme=None)

st.subheader("Across layers")
st.caption("The paper's claim: attention in the first and last blocks keeps changing its gradient and becomes "
           "low-rank; middle-block MLPs saturate early and stay high-rank.")
m = st.columns(3)
m[0].metric("Rank at k, attention in first/last blocks", f"{claim['terminal_attention_rank']:.3f}")
m[1].metric("Rank at k, MLPs in middle blocks", f"{claim['middle_mlp_rank']:.3f}")
m[2].metric("Spearman(saturation, rank)", f"{claim['spearman_saturation_vs_rank']:.2f}",
            help="> 0: layers whose gradients saturate stay higher-rank, as the paper predicts")
summary_metrics = sorted((c for c in summary.columns if c in METRICS), key=list(METRICS).index)  # "end" first
left, right = st.columns(2)
metric = left.selectbox("Metric", summary_metrics, format_func=lambda c: METRICS[c])
left.plotly_chart(emergence_heatmap_figure(summary, metric), width="stretch", theme=None)
right.plotly_chart(saturation_figure(summary), width="stretch", theme=None)
curve_metric = st.selectbox("Over training", ["w_rank_k_frac", "w_erank_frac", "w_stable_rank", "g_erank_frac",
                                              "g_cos_prev"], format_func=lambda c: METRICS[c])
st.plotly_chart(emergence_curves_figure(over_time, curve_metric), width="stretch", theme=None)
st.dataframe(summary, hide_index=True, width="stretch")

st.subheader("One layer")
names = [l.name for l in run.layers]
name = st.selectbox("Layer", names, index=0)
scale = st.radio("Spectra colour scale", ["linear", "log"], horizontal=True)
try:
    view = cached.dynamics_layer(folder, stamp, name, source)
except wc.WeLoreError as problem:
    st.error(plain(problem))
    st.stop()
st.plotly_chart(gradient_cosine_figure(view["cos"], view["steps"], name, view["used"]), width="stretch", theme=None)
g, w = st.columns(2)
g.plotly_chart(spectra_time_figure(view["grad"], view["steps"], name, "grad", scale), width="stretch", theme=None)
w.plotly_chart(spectra_time_figure(view["weight"], view["steps"], name, "weight", scale), width="stretch", theme=None)
