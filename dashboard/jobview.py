"""Following a background job on a page: progress bar, cancel button, final state (no Streamlit in jobs)."""
from __future__ import annotations

import uuid
from typing import Any, Callable

import streamlit as st

import welore_core as wc
from dashboard.text import plain
from dashboard.settings import Keys


def launch(store: wc.JobStore, kind: str, params: dict[str, Any], fn: Callable[[wc.Progress], dict[str, Any]],
           param: str) -> str:
    """Start a job owned by this browser tab and put its id in the URL, so a reload finds it again."""
    if Keys.OWNER not in st.session_state:
        st.session_state[Keys.OWNER] = uuid.uuid4().hex[:8]
    job = wc.start_job(kind, params, fn, store, owner=st.session_state[Keys.OWNER])
    st.query_params[param] = job
    return job


def job_panel(store: wc.JobStore, param: str) -> wc.JobState | None:
    """Show the job whose id is in the URL query parameter `param`; returns its state once it is done."""
    job_id = st.query_params.get(param)
    if not job_id:
        st.info("No job launched from this tab yet.")
        return None
    try:
        state = store.get(job_id)
    except wc.WeLoreError as problem:
        st.warning(plain(problem))
        return None
    st.markdown(f"**Job {state.id}** ({state.kind}): `{state.status}`")
    if not state.finished:
        st.progress(state.fraction, text=plain(state.message or "starting"))
        if st.button("Cancel", key=f"cancel-{state.id}"):
            store.request_cancel(state.id)
        return None
    if state.status != "done" or not state.result:
        st.error(plain(state.error or state.status))
        return None
    return state
