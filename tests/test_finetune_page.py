"""The fine-tuning page on a tiny compressed model: launch two modes as one background job, then compare them."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import char_tokenizer, tiny_llama
from streamlit.testing.v1 import AppTest

import welore_core as wc
from welore_core.compression.apply import save_compressed
from welore_core.evaluation import wait
from welore_core.figures import loss_curves_figure
from welore_core.finetune import finetune_runs, with_ratios

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "page_finetune.py")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def test_page_runs_modes_in_the_background_and_compares_them(tmp_path: Path, corpus_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_llama()
    spectra = wc.compute_spectra(model, wc.SpectraConfig(use_cache=False))
    report = wc.compress_to(model, wc.make_plan(spectra, wc.PlanConfig(err=50)))
    folder = save_compressed(model, tmp_path / "compressed", report)
    char_tokenizer().save_pretrained(folder)
    for key, value in {"WELORE_MODEL": str(folder), "WELORE_FT_DATA": str(corpus_file), "WELORE_FT_STEPS": "4",
                       "WELORE_FT_SEQLEN": "32", "WELORE_FT_OUT": str(tmp_path / "out")}.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception and "No job launched" in at.info[0].value
    at.number_input(key="ft_forget").set_value(0)
    at.number_input(key="ft_lr").set_value(1e-2)
    at.button[0].click().run()
    assert not at.exception and not at.error
    job = at.query_params["ft"]
    state = wait(job[0] if isinstance(job, list) else job, timeout=120)
    assert state.status == "done", state.error
    assert [r["mode"] for r in state.result["runs"]] == ["lrc", "full"]
    assert (state.done, state.total) == (8, 8)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not at.dataframe:
        at.run()
    table = at.dataframe[0].value
    assert sorted(table["mode"]) == ["full", "lrc"] and "tokens_per_s_vs_full" in table.columns
    runs = with_ratios(finetune_runs())
    full = runs[runs["mode"] == "full"].iloc[0]
    lrc = runs[runs["mode"] == "lrc"].iloc[0]
    assert full["state_mib_vs_full"] == 1.0 and lrc["trainable_params_vs_full"] < 1.0
    assert lrc["state_mib"] < full["state_mib"]  # fewer gradients and optimizer moments
    fig = loss_curves_figure(runs)
    assert [t.name for t in fig.data] == list(runs["mode"]) and all(len(t.x) == 4 for t in fig.data)
    assert (tmp_path / "out" / "lrc" / "welore-finetune.json").is_file()


def test_page_distils_from_the_teacher_it_shows(tmp_path: Path, lm_dir: Path, corpus_file: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model = wc.load_model(wc.resolve_model(lm_dir))
    report = wc.compress_to(model, wc.make_plan(wc.compute_spectra(lm_dir), wc.PlanConfig(err=50)))
    folder = save_compressed(model, tmp_path / "compressed", report, lm_dir, lm_dir.name)
    for key, value in {"WELORE_MODEL": str(folder), "WELORE_FT_DATA": str(corpus_file), "WELORE_FT_STEPS": "2",
                       "WELORE_FT_SEQLEN": "32", "WELORE_FT_OUT": str(tmp_path / "out")}.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    captions = [c.value.replace("\\", "") for c in at.caption]  # as shown: Markdown escapes removed
    assert f"Distillation teacher: tiny-lm ({lm_dir})" in captions
    at.multiselect(key="ft_modes").set_value(["lrc"])
    at.number_input(key="ft_forget").set_value(0)
    at.checkbox(key="ft_distill").check()
    at.number_input(key="ft_temperature").set_value(2.0)
    at.button[0].click().run()
    assert not at.exception and not at.error
    job = at.query_params["ft"]
    state = wait(job[0] if isinstance(job, list) else job, timeout=120)
    assert state.status == "done", state.error
    record = wc.FinetuneResult.from_record(
        __import__("json").loads((tmp_path / "out" / "lrc" / "welore-finetune.json").read_text()))
    assert record.config["distill"] and record.config["temperature"] == 2.0
    lm_dir.rename(tmp_path / "gone")  # the teacher moved: the page says so instead of failing
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any("Distillation teacher: none found" in c and "pass --teacher" in c for c in captions)
