"""Compress & evaluate: launch compression + perplexity as a background job, follow it, compare runs.

The job runs in a thread of the server process (never touching Streamlit); its state lives in the run
registry, so the page can be reloaded (the job id is in the URL) and tabs do not share jobs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

import welore_core as wc
from dashboard.jobview import job_panel, launch
from dashboard.state import picked_model, placement_setting, svd_setting
from dashboard.text import plain
from dashboard.settings import PLAN_STRATEGIES, Keys, Params, settings

st.title("Compress & evaluate")
model, info = picked_model()
applied: dict[str, Any] | None = st.session_state.get(Keys.APPLIED_RANKMAP)
choices = [*PLAN_STRATEGIES, "dense (no compression)"]
cfg = settings()
if applied:
    choices.insert(0, f"rank map: {applied['name']}")

with st.form("launch"):
    c1, c2, c3 = st.columns(3)
    strategy = c1.selectbox("Strategy", choices, help="a rank map imported on the rank plan page is offered first")
    err = c2.number_input("Target ERR (%)", 0.0, 95.0, 20.0, 5.0)
    mode = c3.selectbox("Mode", ["lrc", "all"], help="lrc: factor LRCs only; all: every layer at its rank")
    d1, d2, d3 = st.columns(3)
    data = d1.text_input("Data", value=cfg.eval_data,
                         help="wikitext2, c4 (hub) or a path to a text file")
    tokens = d2.number_input("Token budget", 64, 10_000_000, cfg.eval_tokens, 1024)
    seqlen = d3.number_input("Window (seqlen)", 2, 32768, cfg.eval_seqlen, 64)
    t1, t2 = st.columns([3, 1])
    tasks = t1.multiselect("Zero-shot tasks (lm-evaluation-harness)", wc.local_task_names(),
                           help="the harness's own tasks, run offline from $WELORE_DATA, in the same job")
    limit = t2.number_input("Examples per task (0 = all)", 0, 100_000, cfg.task_limit, 50)
    save_to = st.text_input("Save the compressed model to (optional folder)", "")
    launched = st.form_submit_button("Launch", type="primary")

store = wc.JobStore()
if launched:
    try:
        device, weights = placement_setting()
        config = wc.EvalConfig(data=data, seqlen=int(seqlen), tokens=int(tokens), device=device, weights_dtype=weights)
        target: wc.PlanConfig | dict[str, Any] | None = None  # planned in the job, on the sidebar's SVD setting
        if applied and strategy.startswith("rank map: "):
            target = applied["data"]
        elif not strategy.startswith("dense"):
            target = wc.PlanConfig(strategy=strategy, err=err)
        dtype, method = svd_setting()
        spectra_config = wc.SpectraConfig(dtype=dtype, method=method, device=device)
        saved = Path(save_to) if save_to.strip() else None
        spec = model.strip() or None
        compression = wc.CompressionConfig(mode=mode, device=device, weights_dtype=weights)
        zeroshot = (wc.ZeroShotConfig(tasks=tuple(tasks), limit=int(limit) or None, device=device,
                                      weights_dtype=weights) if tasks else None)
        if saved is not None:  # Generate's folder, below (its widget is made later in this run)
            st.session_state[Keys.SAVED_FOLDER] = st.session_state["gen_folder"] = str(saved)
        launch(store, "compress-eval", {"model": model or info.label, "strategy": strategy, "err": err, "mode": mode,
                                        "data": data, "tokens": int(tokens), "seqlen": int(seqlen)},
               lambda progress: wc.compress_and_evaluate(spec, target, config, compression, progress, save_to=saved,
                                                         spectra=spectra_config, tasks=zeroshot),
               Params.EVAL_JOB)
    except wc.WeLoreError as problem:
        st.error(plain(problem))


@st.fragment(run_every=1.0)
def follow() -> None:
    state = job_panel(store, Params.EVAL_JOB)
    if state is not None and state.result:
        if st.session_state.get(Keys.CHARTED_JOB) != state.id:  # once: redraw the whole page so the chart shows it
            st.session_state[Keys.CHARTED_JOB] = state.id
            st.rerun(scope="app")
        r = state.result
        cols = st.columns(4)
        cols[0].metric("Perplexity", f"{r['ppl']:.3f}")
        cols[1].metric("Parameters", f"{r['params'] / 1e6:.2f} M")
        cols[2].metric("Tokens", f"{r['tokens']}")
        cols[3].metric("From registry", "yes" if r.get("cached") else "no")
        accuracy = [(k.removeprefix("acc_"), v, r.get(f"acc_stderr_{k.removeprefix('acc_')}")) for k, v in r.items()
                    if k.startswith("acc_") and not k.startswith("acc_stderr_")]
        for col, (task, acc, err) in zip(st.columns(max(len(accuracy), 1)), accuracy):
            col.metric(f"Accuracy: {task}", f"{acc:.4f}", help=f"± {err:.4f} (standard error)" if err else None)


follow()

st.subheader("Generate")
st.caption("What the compressed model now writes: one prompt, its greedy continuation beside the dense model's it was "
           "made from (read from the folder's manifest), generated in the background.")
with st.form("generate"):
    g1, g2 = st.columns([3, 1])
    st.session_state.setdefault("gen_folder", st.session_state.get(Keys.SAVED_FOLDER, ""))
    folder = g1.text_input("Compressed model folder", key="gen_folder",
                           help="the folder Compress & evaluate saved to, or any compressed folder")
    new_tokens = g2.number_input("New tokens", 1, 1024, 48, key="gen_tokens")
    prompt = st.text_area("Prompt", "The history of the city begins", key="gen_prompt")
    generated = st.form_submit_button("Generate")
if generated:
    try:
        if not folder.strip():
            raise wc.WeLoreError("name a compressed folder (save one with Compress & evaluate above)")
        device, weights = placement_setting()
        spec_folder, text, count = folder.strip(), prompt, int(new_tokens)
        launch(store, "generate", {"folder": spec_folder, "tokens": count},
               lambda progress: wc.side_by_side(spec_folder, text, count, "", device, weights, progress),
               Params.GENERATE_JOB)
    except wc.WeLoreError as problem:
        st.error(plain(problem))


@st.fragment(run_every=1.0)
def follow_generation() -> None:
    if not st.query_params.get(Params.GENERATE_JOB):
        return
    state = job_panel(store, Params.GENERATE_JOB)
    if state is not None and state.result:
        for col, c in zip(st.columns(len(state.result["continuations"])), state.result["continuations"]):
            col.markdown(f"**{plain(c['role'])}**: {plain(c['model'])} ({c['tokens']} tokens, {c['seconds']:.1f} s)")
            col.text(state.result["prompt"] + c["text"])


follow_generation()

st.subheader("Run registry")
runs = wc.Registry.default().frame("eval")
if runs.empty:
    st.caption("No evaluations recorded yet.")
else:
    # one chart compares like with like: one source model (its compressions from any path), one data set, one
    # window and token budget
    r1, r2, r3, r4 = st.columns(4)
    models = list(dict.fromkeys(runs["source_model"].where(runs["source_model"].notna(), runs["model"])))
    chart_model = r1.selectbox("Model", models, index=models.index(info.label) if info.label in models else 0)
    axis = r3.radio("x axis", ["ERR", "parameters"], horizontal=True)
    zeroshot = wc.Registry.default().frame("zeroshot")
    measures = ["perplexity", *(f"accuracy: {t}" for t in dict.fromkeys(zeroshot["task"].dropna()))]
    measure = st.selectbox("Measure", measures, help="perplexity, or a harness task's accuracy")
    y = "ppl" if measure == "perplexity" else "acc"
    rows = runs if y == "ppl" else zeroshot[zeroshot["task"] == measure.removeprefix("accuracy: ")]
    placed, unplaced = wc.chart_runs(rows, chart_model, "err" if axis == "ERR" else "params", y)
    origin = placed["origin"].fillna("eval")
    measured_by = r4.multiselect("Measured by", [o for o in wc.ORIGINS if o in set(origin)],
                                 default=[o for o in wc.ORIGINS if o in set(origin)],
                                 help="eval: `welore eval`; sweep: `welore sweep`; dashboard: this page's jobs")
    placed = placed[origin.isin(measured_by)]
    columns = ["dataset", "seqlen", "token_budget"] if y == "ppl" else ["num_fewshot", "limit_n", "harness"]
    setting = placed[columns].astype(str).agg(" · ".join, axis=1)
    settings = list(setting.value_counts().index)  # the setting with the most runs first
    chosen = r2.selectbox("Data · seqlen · token budget" if y == "ppl" else "Few-shot · limit · harness", settings
                          ) if settings else None
    part = placed[setting == chosen] if chosen is not None else placed
    st.caption(f"{len(part)} runs on the chart")
    st.plotly_chart(wc.figures.runs_figure(part, "err" if axis == "ERR" else "params", y), width="stretch",
                    theme=None)
    if not unplaced.empty:
        st.markdown("**Runs not on the chart**, and why")
        st.dataframe(unplaced[["model", "strategy", "mode", "err", "params", y, "reason"]], hide_index=True,
                     width="stretch")
    st.dataframe(runs, hide_index=True, width="stretch")
