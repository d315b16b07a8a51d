"""Fine-tune: LRC-only training (WeLore) against N-LRC, full, LoRA and GaLore — launch, follow, compare.

The selected modes run one after another in a background job with the same data, seed, schedule and
steps; every run lands in the run registry, where the comparison below reads it from.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

import welore_core as wc
from dashboard.jobview import job_panel, launch
from dashboard.state import picked_model, placement_setting
from dashboard.text import plain
from dashboard.settings import Params, settings

st.title("Fine-tune")
st.caption("WeLore's proposal (arXiv 2407.11239 §4): train only the factors of the Low-Rank Components, N-LRCs "
           "frozen. Compare it with training the N-LRCs, everything, LoRA adapters or GaLore on the same data.")
model, info = picked_model()  # a compressed folder; a dense model is compressed at the ERR below first
st.caption(f"Model: **{plain(info.label)}** ({info.kind})" + ("" if info.kind == "compressed" else
                                                       " — dense: compressed at the ERR below before training"))
cfg = settings()
default_data = cfg.ft_data

with st.form("finetune"):
    modes = st.multiselect("Modes", list(wc.FINETUNE_MODES), default=["lrc", "full"], key="ft_modes")
    c1, c2, c3 = st.columns(3)
    kind = c1.radio("Train on", ["text", "downstream task"], horizontal=True, key="ft_kind")
    data = c2.text_input("Text file", value=default_data, key="ft_data",
                         help="a text file, wikitext2 or hub:NAME; `welore sample` writes text the dense model samples "
                              "itself, good data for distillation")
    task = c3.selectbox("Task", sorted(wc.TASKS), key="ft_task")
    d1, d2, d3, d4 = st.columns(4)
    steps = d1.number_input("Steps", 1, 100_000, cfg.ft_steps, key="ft_steps")
    seqlen = d2.number_input("Seqlen", 8, 8192, cfg.ft_seqlen, key="ft_seqlen")
    batch = d3.number_input("Batch size", 1, 512, 4, key="ft_batch")
    lr = d4.number_input("Learning rate", 1e-7, 1.0, 1e-4, format="%.1e", key="ft_lr")
    e1, e2, e3, e4 = st.columns(4)
    err = e4.number_input("Dense model: compress to ERR % first (0: no)", 0.0, 95.0, 50.0, 5.0, key="ft_err")
    forget = e1.number_input("WikiText-2 tokens (0: skip)", 0, 1_000_000, 4096, 512, key="ft_forget")
    lora_rank = e2.number_input("LoRA rank", 1, 1024, 8, key="ft_lora")
    galore_rank = e3.number_input("GaLore rank", 1, 4096, 128, key="ft_galore")
    f1, f2, f3, f4 = st.columns(4)
    distil = f1.checkbox("Distil from the dense model", key="ft_distill",
                         help="KL(teacher || student) over the vocabulary instead of the LM loss alone: the compressed "
                              "model learns the dense model's next-token distribution")
    temperature = f2.number_input("Temperature", 0.1, 20.0, 1.0, 0.5, key="ft_temperature")
    alpha = f3.number_input("LM loss share (alpha)", 0.0, 0.99, 0.0, 0.05, key="ft_alpha")
    teacher = f4.text_input("Teacher (empty: the dense model)", key="ft_teacher",
                            help="default: the dense model the compressed folder was made from (its manifest), or the "
                                 "dense model itself when it is compressed before training")
    out = st.text_input("Output folder (one subfolder per mode)", value=cfg.ft_out,
                        key="ft_out")
    launched = st.form_submit_button("Launch", type="primary")

store = wc.JobStore()
try:
    shown = wc.describe_teacher(model or None, st.session_state.get("ft_teacher", ""),
                                compresses_first=info.kind != "compressed")
    st.caption(f"Distillation teacher: {plain(shown)}")
except wc.WeLoreError as problem:
    st.caption(f"Distillation teacher: none found ({plain(problem)})")


if launched:
    try:
        if not modes:
            raise wc.WeLoreError("pick at least one mode")
        spec = model or None
        is_compressed = info.kind == "compressed"
        device, weights = placement_setting()
        config = wc.FinetuneConfig(device=device, weights_dtype=weights, mode=modes[0],
                                   data=data.strip() if kind == "text" else "",
                                task=task if kind != "text" else "", steps=int(steps), seqlen=int(seqlen),
                                batch_size=int(batch), lr=float(lr), forget_tokens=int(forget),
                                eval_tokens=8 * int(seqlen), lora_rank=int(lora_rank),
                                galore_rank=int(galore_rank),
                                err=float(err) if err > 0 and not is_compressed else None, save_every=0,
                                distill=bool(distil), temperature=float(temperature) if distil else 1.0,
                                alpha=float(alpha) if distil else 0.0, teacher=teacher.strip() if distil else "")
        params = {"model": model, "modes": modes, "steps": int(steps), "data": config.data or config.task,
                  **({"teacher": teacher.strip() or "dense"} if distil else {})}
        folder = Path(out).expanduser()
        launch(store, "finetune", params, lambda progress: {"runs": wc.run_modes(spec, config, modes, folder, progress)},
               Params.FINETUNE_JOB)
    except wc.WeLoreError as problem:
        st.error(plain(problem))


@st.fragment(run_every=1.0)
def follow() -> None:
    state = job_panel(store, Params.FINETUNE_JOB)
    if state is not None and state.result:
        df = wc.runs_frame(state.result["runs"])
        st.plotly_chart(wc.figures.loss_curves_figure(df.assign(id=range(1, len(df) + 1))), width="stretch", theme=None,
                        key="ft_job_curves")


follow()

st.subheader("Compare runs")
runs = wc.finetune_runs()
if runs.empty:
    st.caption("No fine-tuning runs recorded yet.")
else:
    datasets = sorted({str(d) for d in runs["data"]})
    picked = st.selectbox("Data", datasets, key="ft_compare_data")
    shown = runs[runs["data"] == picked]
    st.plotly_chart(wc.figures.loss_curves_figure(shown), width="stretch", theme=None, key="ft_compare_curves")
    table = wc.with_ratios(shown).drop(columns=["loss_curve"])
    st.dataframe(table, hide_index=True, width="stretch")
