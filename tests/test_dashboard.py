"""The dashboard page runs on a tiny real model: spectra load, the ERR slider changes the plan totals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import welore_core as wc

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_plan_page_follows_the_err_slider(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers analysed"] == "21 in 3 blocks" and metrics["Achieved ERR"].endswith("%")
    spectra = wc.compute_spectra(llama_dir)
    expected = wc.make_plan(spectra, wc.PlanConfig(err=50.0))
    assert metrics["Achieved ERR"] == f"{expected.achieved_err:.2f} %"
    at.slider[0].set_value(20.0).run()
    low = wc.make_plan(spectra, wc.PlanConfig(err=20.0))
    assert {m.label: m.value for m in at.metric}["Achieved ERR"] == f"{low.achieved_err:.2f} %"
    assert {m.label: m.value for m in at.metric}["LRC / N-LRC"] == f"{low.totals['lrc']} / {low.totals['nlrc']}"


def test_bad_model_path_shows_an_error_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "no such file or folder" in at.error[0].value


def test_figures_name_every_layer_on_hover(llama_dir: Path) -> None:
    from dashboard.figures import reduction_heatmap_figure, spectra_heatmap_figure

    spectra = wc.compute_spectra(llama_dir)
    plan = wc.make_plan(spectra, wc.PlanConfig(err=40))
    fig = reduction_heatmap_figure(plan.frame())
    names = {str(n) for row in fig.data[0].customdata for n, _, _ in row}
    assert names == {l.name for l in spectra.layers}
    assert json.loads(fig.to_json())["layout"]["xaxis"]["title"]["text"] == "layer type"
    heat = spectra_heatmap_figure(spectra, "self_attn.q_proj", k=plan.k)
    assert heat.data[0].z.shape == (3, 32) and len(heat.data) == 2


def test_evaluate_page_runs_a_background_job_to_the_registry(lm_dir: Path, corpus_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("WELORE_MODEL", str(lm_dir))
    monkeypatch.setenv("WELORE_EVAL_DATA", str(corpus_file))
    monkeypatch.setenv("WELORE_EVAL_TOKENS", "512")
    monkeypatch.setenv("WELORE_EVAL_SEQLEN", "64")
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("dashboard/page_evaluate.py").run()
    assert not at.exception and "No job launched" in at.info[0].value
    at.selectbox[0].set_value("welore")
    at.number_input[0].set_value(60.0)
    at.button[0].click().run()  # the form's Launch button
    assert not at.exception and not at.error
    job = at.query_params["job"][0] if isinstance(at.query_params["job"], list) else at.query_params["job"]
    from welore_core.jobs import wait

    state = wait(job, timeout=120)
    assert state.status == "done", state.error
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        at.run()
        if any(m.label == "Perplexity" for m in at.metric):
            break
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Perplexity"] == f"{state.result['ppl']:.3f}"
    assert len(wc.Registry.default().frame("eval")) == 1


def test_sensitivity_page_scans_in_the_background(lm_dir: Path, corpus_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from welore_core.jobs import wait

    for key, value in {"WELORE_MODEL": str(lm_dir), "WELORE_EVAL_DATA": str(corpus_file), "WELORE_EVAL_TOKENS": "256",
                       "WELORE_EVAL_SEQLEN": "64"}.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("dashboard/page_sensitivity.py").run()
    assert not at.exception
    at.button[0].click().run()
    assert not at.exception and not at.error
    job = at.query_params["scan"]
    state = wait(job[0] if isinstance(job, list) else job, timeout=120)
    assert state.status == "done", state.error
    assert [r["kind"] for r in state.result["rows"]][0] == "self_attn.q_proj" and len(state.result["rows"]) == 7
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not at.dataframe:
        at.run()
    assert len(at.dataframe[0].value) == 7


def test_err_and_k_sliders_follow_each_other(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    spectra = wc.compute_spectra(llama_dir)
    err_slider, k_slider = at.slider[0], at.slider[1]
    assert k_slider.value == pytest.approx(wc.make_plan(spectra, wc.PlanConfig(err=50.0)).k)
    err_slider.set_value(30.0).run()
    assert at.slider[1].value == pytest.approx(wc.make_plan(spectra, wc.PlanConfig(err=30.0)).k)
    at.slider[1].set_value(0.4).run()
    at_k = wc.make_plan(spectra, wc.PlanConfig(err=None, k=0.4))
    assert at.slider[0].value == pytest.approx(round(at_k.achieved_err, 2))
    assert {m.label: m.value for m in at.metric}["Achieved ERR"] == f"{at_k.achieved_err:.2f} %"
    assert not at.exception
