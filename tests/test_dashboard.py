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
