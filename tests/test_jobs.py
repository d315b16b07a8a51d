"""Background jobs: progress, results, failures, cancellation and state shared through the registry."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

import welore_core as wc
from welore_core.evaluation import EvalConfig, JobStore, compress_and_evaluate, start_job, wait


def test_job_reports_progress_and_result() -> None:
    def work(progress):  # type: ignore[no-untyped-def]
        for i in range(1, 4):
            progress(i, 3, f"step {i}")
        return {"answer": 42}

    job = start_job("demo", {"x": 1}, work, owner="tab-a")
    state = wait(job)
    assert state.status == "done" and state.result == {"answer": 42} and state.params == {"x": 1}
    assert (state.done, state.total, state.message) == (3, 3, "step 3") and state.fraction == 1.0
    assert [j.id for j in JobStore().list(owner="tab-a")] == [job] and JobStore().list(owner="tab-b") == []


def test_failures_end_in_a_final_state_with_the_message() -> None:
    def broken(progress):  # type: ignore[no-untyped-def]
        raise wc.WeLoreError("data 'x': no such file")

    state = wait(start_job("demo", {}, broken))
    assert state.status == "failed" and state.error == "data 'x': no such file"


def test_cancellation_stops_the_job_at_its_next_progress_call() -> None:
    started = threading.Event()

    def endless(progress):  # type: ignore[no-untyped-def]
        i = 0
        while True:
            i += 1
            progress(i, 0, "working")
            started.set()

    store = JobStore()
    job = start_job("demo", {}, endless, store)
    assert started.wait(10)
    store.request_cancel(job)
    assert wait(job, store, timeout=10).status == "cancelled"


def test_a_job_whose_process_died_reads_as_interrupted(isolated_cache: Path) -> None:
    store = JobStore()
    job = store.create("demo", {})
    with store._connect() as conn:
        conn.execute("UPDATE jobs SET pid = ?, status = 'running' WHERE id = ?", (2**22 + 12345, job))
    state = store.get(job)
    assert state.status == "interrupted" and "is gone" in (state.error or "")
    with pytest.raises(wc.WeLoreError, match="no job"):
        store.get("nope")


def test_compress_and_evaluate_job_lands_in_the_registry(lm_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    spectra = wc.compute_spectra(lm_dir)
    rankmap = wc.rankmap_dict(wc.make_plan(spectra, wc.PlanConfig(err=60)))
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    save_to = tmp_path / "compressed"
    job = start_job("compress-eval", {"err": 60}, lambda p: compress_and_evaluate(lm_dir, rankmap, config, progress=p,
                                                                                 save_to=save_to))
    state = wait(job, timeout=300)
    assert state.status == "done", state.error
    assert state.result is not None and state.result["cached"] is False
    runs = wc.Registry.default().frame("eval")
    assert len(runs) == 1 and runs.loc[0, "ppl"] == pytest.approx(state.result["ppl"])
    # the saved folder is the model that was scored: evaluated on its own it gives the same perplexity
    assert wc.evaluate_model(save_to, config)["ppl"] == pytest.approx(state.result["ppl"], rel=1e-6)


def test_a_plan_config_is_planned_in_the_job_like_its_rank_map(lm_dir: Path, corpus_file: Path) -> None:
    rankmap = wc.rankmap_dict(wc.make_plan(wc.compute_spectra(lm_dir), wc.PlanConfig(err=60)))
    config = EvalConfig(data=str(corpus_file), seqlen=64, tokens=512)
    first = compress_and_evaluate(lm_dir, rankmap, config)
    planned = compress_and_evaluate(lm_dir, wc.PlanConfig(err=60), config)
    assert first["cached"] is False and planned["cached"] is True  # the same ranks: the same registry row
    assert planned["achieved_err"] == pytest.approx(rankmap["achieved_err"]) and planned["ppl"] == first["ppl"]
