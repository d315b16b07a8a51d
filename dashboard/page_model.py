"""Model: what the picked model is (architecture, blocks, parameters, fingerprint) and its spectra."""
from __future__ import annotations

import pandas as pd
import streamlit as st

import welore_core as wc
from dashboard import cached
from dashboard.state import picked_model, spectra_with_progress, svd_setting
from dashboard.text import plain

st.title("Model")
st.caption("Pick the model in the sidebar: the embedded SmolLM2-135M-Instruct, a local folder, a .gguf, a "
           "safetensors checkpoint read tensor by tensor, or a hub id.")
spec, info = picked_model()
cols = st.columns(4)
cols[0].metric("Architecture", info.architecture)
cols[1].metric("Blocks", "?" if info.blocks is None else str(info.blocks))
cols[2].metric("Parameters", f"{info.params / 1e6:.1f} M")
with st.spinner("fingerprinting the weights …"):
    try:
        fingerprint = cached.fingerprint(spec)
    except wc.WeLoreError as err:
        fingerprint = "n/a"
        st.warning(plain(err))
cols[3].metric("Fingerprint", fingerprint[:12], help=fingerprint)
st.dataframe(pd.DataFrame(info.rows(), columns=["field", "value"]), hide_index=True, width="stretch")

st.subheader("Spectra")
dtype, method = svd_setting()
st.caption(f"Singular values of every linear layer in the blocks ({method}, {dtype}), cached per layer under "
           "cache/spectra: an interrupted run resumes, a warm load takes milliseconds.")
if st.button("Compute / load spectra", type="primary"):
    spectra = spectra_with_progress(spec)
    st.success(f"{len(spectra.layers)} layers: {spectra.from_cache} from the cache, "
               f"{len(spectra.layers) - spectra.from_cache} computed, in {spectra.seconds:.2f} s.")
    st.page_link("dashboard/page_plan.py", label="Explore spectra and choose a rank plan →")
