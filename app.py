"""WeLore Studio — Streamlit entry point: a router over the pages in dashboard/.

Run with `make run` (or `streamlit run app.py --server.address 127.0.0.1`).
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="WeLore Studio", layout="wide")
st.navigation([
    st.Page("dashboard/page_plan.py", title="Spectra & rank plan", default=True),
    st.Page("dashboard/page_evaluate.py", title="Compress & evaluate"),
    st.Page("dashboard/page_sensitivity.py", title="Sensitivity"),
]).run()
