"""The model every page works on: picked once in the sidebar of app.py (entry-point widgets keep their
state across pages), with $WELORE_MODEL as the default (dashboard.settings) so `make run` and tests need no clicks."""
from __future__ import annotations


import streamlit as st

import welore_core as wc
from dashboard.text import plain
from dashboard.settings import Keys, settings

KIND_LABELS = {
    "embedded": "Embedded SmolLM2-135M-Instruct",
    "folder": "Local model folder",
    "gguf": "GGUF file",
    "safetensors": "Safetensors checkpoint (streamed)",
    "hub": "Hugging Face hub id",
}
PLACEHOLDERS = {
    "folder": "/path/to/model (config.json + *.safetensors), or a compressed model folder",
    "gguf": "/path/to/model.gguf (dequantised once into cache/models)",
    "safetensors": "/path/to/model.safetensors or model.safetensors.index.json (read tensor by tensor)",
    "hub": "owner/name, e.g. meta-llama/Llama-2-7b-hf (needs network access)",
}


def model_picker() -> None:
    """Sidebar: source kind + path. Call from the entry point only (its widgets then live on every page)."""
    default = settings().model
    state = st.session_state
    state.setdefault(Keys.SOURCE_KIND, wc.guess_kind(default))
    state.setdefault(Keys.SOURCE_PATH, default)
    with st.sidebar:
        st.header("Model")
        kind = st.radio("Source", list(wc.SOURCE_KINDS), format_func=KIND_LABELS.__getitem__, key=Keys.SOURCE_KIND)
        if kind != "embedded":
            st.text_input("Path or id", key=Keys.SOURCE_PATH, placeholder=PLACEHOLDERS[kind])
        with st.expander("Compute settings"):
            st.selectbox("Device", ["auto", "cpu", "cuda"], key=Keys.DEVICE,
                         help="where models are loaded and SVDs run; auto = the GPU when there is one")
            st.selectbox("Weights dtype", list(wc.WEIGHT_DTYPES), key=Keys.WEIGHTS_DTYPE,
                         help="auto = bfloat16 on a GPU, float32 on the CPU; float16 needs a GPU")
            st.selectbox("SVD precision", ["float32", "float64"], key=Keys.SVD_DTYPE)
            st.selectbox("Method", list(wc.SVD_METHODS), key=Keys.SVD_METHOD,
                         help="svdvals: LAPACK/cuSOLVER singular values; gram: eigenvalues of the smaller Gram "
                              "matrix in float64, batched on a GPU; auto = gram (both within 1e-5 of "
                              "s_max of a float64 SVD)")


def current_model() -> tuple[str, str]:
    """(spec, kind) of the picked model; a page run on its own (AppTest.from_file) falls back to the env."""
    state = st.session_state
    if Keys.SOURCE_KIND not in state:
        default = settings().model
        return default.strip(), wc.guess_kind(default)
    kind = state[Keys.SOURCE_KIND]
    return ("" if kind == "embedded" else str(state.get(Keys.SOURCE_PATH, "")).strip()), kind


def picked_model() -> tuple[str, wc.ModelInfo]:
    """The picked model, resolved and checked against the chosen kind; stops the page with a clear
    message (never a traceback) when the path is missing, wrong or not a model."""
    spec, kind = current_model()
    if kind != "embedded" and not spec:
        st.info(f"Enter a {KIND_LABELS[kind].lower()} in the sidebar.")
        st.stop()
    try:
        with st.spinner("resolving the model …"):
            info = wc.describe_model(spec or None)
        wc.expect_kind(info, kind)
    except wc.WeLoreError as err:
        st.error(plain(err))
        st.stop()
    return spec, info


def svd_setting() -> tuple[str, str]:
    """(dtype, method) chosen in the sidebar; the defaults when a page runs on its own."""
    state = st.session_state
    return str(state.get(Keys.SVD_DTYPE, "float32")), str(state.get(Keys.SVD_METHOD, "auto"))


def placement_setting() -> tuple[str, str]:
    """(device, weights dtype) chosen in the sidebar; the defaults when a page runs on its own."""
    return str(st.session_state.get(Keys.DEVICE, "auto")), str(st.session_state.get(Keys.WEIGHTS_DTYPE, "auto"))


def spectra_with_progress(spec: str) -> wc.Spectra:
    """The picked model's spectra with a progress bar while layers are computed; a failure stops the page
    with its message, and cache repairs or discovery notes are shown as warnings."""
    from dashboard import cached

    dtype, method = svd_setting()
    bar = st.progress(0.0, text="loading spectra …")
    try:
        spectra = cached.spectra(spec, dtype, method,
                                 progress=lambda done, total, name: bar.progress(done / total,
                                                                                 text=f"SVD {done}/{total}: {name}"))
    except wc.WeLoreError as err:
        st.error(plain(err))
        st.stop()
    finally:
        bar.empty()
    for note in spectra.notes:
        st.warning(plain(note))
    return spectra
