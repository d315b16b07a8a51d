"""WeLore Studio — Streamlit entry point: the model picker (shared by every page) and a router over dashboard/.

Run with `make run` (or `streamlit run app.py --server.address 127.0.0.1`).
"""
from __future__ import annotations

import streamlit as st

from dashboard.state import model_picker

st.set_page_config(page_title="WeLore Studio", layout="wide")
pages = st.navigation([
    st.Page("dashboard/page_plan.py", title="Spectra & rank plan", default=True),
    st.Page("dashboard/page_model.py", title="Model"),
    st.Page("dashboard/page_evaluate.py", title="Compress & evaluate"),
    st.Page("dashboard/page_sensitivity.py", title="Sensitivity"),
    st.Page("dashboard/page_finetune.py", title="Fine-tune"),
    st.Page("dashboard/page_dynamics.py", title="Gradient dynamics"),
])
model_picker()  # entry-point widgets keep their state on every page
pages.run()
