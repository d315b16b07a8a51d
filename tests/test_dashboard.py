"""The dashboard page runs on a tiny real model: spectra load, the ERR slider changes the plan totals."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from streamlit.testing.v1 import AppTest

import welore_core as wc
from dashboard import explorer
from welore_core.compression.plan import normalize

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def shown(markdown: str) -> str:
    """The characters a Markdown body shows: the dashboard backslash-escapes user text (dashboard.text.plain)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def explorer_data(at: AppTest) -> dict[str, Any]:
    """What the page sent the browser's explorer: its grid id and JSON, and the server's current plan."""
    def walk(node: Any) -> Iterator[Any]:
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    found = [e for e in walk(at._tree) if getattr(e, "type", "") == "bidi_component"]
    assert len(found) == 1, f"expected one explorer, found {len(found)}"
    return dict(json.loads(found[0].proto.json))


def plan_metrics(at: AppTest) -> dict[str, str]:
    """The totals the explorer shows for the server's plan, label -> value (the browser only places them)."""
    return dict(zip(explorer.LABELS, (m[0] for m in explorer_data(at)["current"]["metrics"])))


def pick(at: AppTest, axis: str, value: float) -> AppTest:
    """A slider of the explorer rests at `value`: the session change its callback makes, then the rerun."""
    explorer.apply_pick(at.session_state, {"axis": axis, "value": value, "seq": 1, "have": None})
    return at.run()


def test_the_grid_is_sent_until_the_browser_holds_it_and_picks_are_checked(llama_dir: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    first = explorer_data(at)
    assert first["grid"] and first["current"]["seq"] == 0
    explorer.apply_pick(at.session_state, {"axis": "err", "value": 30.0, "seq": 7, "have": first["id"]})
    data = explorer_data(at.run())
    assert data["grid"] == "" and (data["current"]["seq"], data["current"]["value"]) == (7, 30.0)  # plan alone
    explorer.apply_pick(at.session_state, {"axis": None, "value": None, "seq": 8, "have": None})  # a page that lost it
    data = explorer_data(at.run())
    assert data["grid"] == first["grid"] and data["current"]["seq"] == 8 and at.session_state["err"] == 30.0
    for bad in ({"axis": "err", "value": 250.0}, {"axis": "k", "value": -0.5}, {"axis": "params", "value": 10.0},
                {"axis": "err", "value": "40"}):
        explorer.apply_pick(at.session_state, {**bad, "seq": 9, "have": first["id"]})
        at.run()
        assert (at.session_state["driver"], at.session_state["err"]) == ("err", 30.0) and not at.exception


def test_plan_page_follows_the_err_slider(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    metrics = plan_metrics(at)
    assert len(metrics) == 6 and "21 layers in 3 blocks" in at.markdown[0].value and metrics["Achieved ERR"].endswith("%")
    spectra = wc.compute_spectra(llama_dir)
    expected = wc.make_plan(spectra, wc.PlanConfig(err=50.0))
    assert metrics["Achieved ERR"] == f"{expected.achieved_err:.2f} %"
    pick(at, "err", 20.0)
    low = wc.make_plan(spectra, wc.PlanConfig(err=20.0))
    assert plan_metrics(at)["Achieved ERR"] == f"{low.achieved_err:.2f} %"
    assert plan_metrics(at)["LRC / N-LRC"] == f"{low.totals.lrc} / {low.totals.nlrc}"
    assert plan_metrics(at)["Trainable (LRC)"] == f"{low.totals.trainable_params / 1e6:.2f} M"
    by_type = next(m.value for m in at.markdown if 'class="dataframe welore-table"' in m.value)  # per layer type
    assert all(f"<td>{kind}</td>" in by_type for kind in wc.plan_by_type(low)["kind"])


def test_bad_model_path_shows_an_error_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "no such file or folder" in at.error[0].value


def test_figures_name_every_layer_on_hover(llama_dir: Path) -> None:
    from welore_core.figures import reduction_heatmap_figure, spectra_heatmap_figure

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
    from welore_core.evaluation import wait

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

    from welore_core.evaluation import wait

    for key, value in {"WELORE_MODEL": str(lm_dir), "WELORE_EVAL_DATA": str(corpus_file),
                       "WELORE_SENSITIVITY_TOKENS": "256", "WELORE_EVAL_SEQLEN": "64"}.items():
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
    assert explorer_data(at)["current"]["k"] == pytest.approx(wc.make_plan(spectra, wc.PlanConfig(err=50.0)).k)
    pick(at, "err", 30.0)
    assert explorer_data(at)["current"]["k"] == pytest.approx(wc.make_plan(spectra, wc.PlanConfig(err=30.0)).k)
    assert at.session_state["k"] == pytest.approx(wc.make_plan(spectra, wc.PlanConfig(err=30.0)).k)
    pick(at, "k", 0.4)
    at_k = wc.make_plan(spectra, wc.PlanConfig(err=None, k=0.4))
    assert at.session_state["err"] == pytest.approx(round(at_k.achieved_err, 2))
    assert explorer_data(at)["current"]["err"] == at_k.achieved_err
    assert plan_metrics(at)["Achieved ERR"] == f"{at_k.achieved_err:.2f} %"
    assert not at.exception


def test_the_explorer_grid_holds_the_plan_the_server_makes_at_each_point(llama_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """What the browser draws for a slider position, from the grid alone, is what the server's plan at that value
    is: ranks, k, achieved ERR and every formatted total (here at ERR 20 % and k 0.4; every point in test_sweep)."""
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    grid = json.loads(explorer_data(at)["grid"])
    assert grid["names"] == [l.name for l in wc.compute_spectra(llama_dir).layers]
    for axis, value in (("err", 20.0), ("k", 0.4), ("err", 99.0), ("k", 0.0)):
        pick(at, axis, value)
        current, points = explorer_data(at)["current"], grid["axes"][axis]
        i = points["targets"].index(value)
        assert (current["axis"], current["value"]) == (axis, value)
        assert [points["ranks"][i], points["k"][i], points["err"][i], points["metrics"][i]] == \
            [current["ranks"], current["k"], current["err"], current["metrics"]]
    at.session_state["strategy"] = "greedy"  # no threshold: the k slider is off, the ERR grid is the greedy plans
    pick(at, "err", 35.0)
    data = explorer_data(at)
    grid = json.loads(data["grid"])
    assert grid["axes"]["k"] is None and data["current"]["k"] is None
    greedy = wc.make_plan(wc.compute_spectra(llama_dir), wc.PlanConfig(strategy="greedy", err=35.0))
    assert grid["axes"]["err"]["ranks"][70] == data["current"]["ranks"] == [l.rank for l in greedy.layers]
    assert plan_metrics(at)["Achieved ERR"] == f"{greedy.achieved_err:.2f} %"
    assert not at.exception


def _plan_page(llama_dir: Path, monkeypatch: pytest.MonkeyPatch, tab: str = "Rank plan") -> AppTest:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    if tab != "Rank plan":  # tabs are lazy: only the open one runs
        at.session_state["plan_tab"] = tab
        at.run()
        assert not at.exception and not at.error
    return at


def test_model_page_describes_the_model_and_loads_spectra(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("dashboard/page_model.py").run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    params = sum(p.numel() for p in wc.load_model(wc.resolve_model(llama_dir)).parameters())
    assert metrics["Architecture"] == "LlamaForCausalLM" and metrics["Blocks"] == "3"
    assert metrics["Parameters"] == f"{params / 1e6:.1f} M"
    at.button[0].click().run()
    assert not at.exception and "21 layers: 0 from the cache, 21 computed" in at.success[0].value
    at.button[0].click().run()
    assert "21 layers: 21 from the cache, 0 computed" in at.success[0].value


def test_source_kind_that_does_not_match_the_path_is_refused(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _plan_page(llama_dir, monkeypatch)
    at.sidebar.radio(key="source_kind").set_value("gguf").run()
    assert not at.exception
    assert "is a folder source, not a gguf one" in at.error[0].value
    at.sidebar.radio(key="source_kind").set_value("folder").run()
    at.sidebar.text_input(key="source_path").set_value("").run()
    assert not at.exception and "Enter a local model folder" in at.info[0].value


def test_layer_table_joins_spectra_and_plan_and_filters(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _plan_page(llama_dir, monkeypatch, "Layers")
    spectra = wc.compute_spectra(llama_dir)
    plan = wc.make_plan(spectra, wc.PlanConfig(err=50.0))
    assert len(at.dataframe) == 1  # the by-type table of the closed plan tab is not drawn
    table = at.dataframe[0].value
    assert len(table) == 21 and list(table.columns[:4]) == ["name", "block", "kind", "shape"]
    row = table.set_index("name").loc["model.layers.1.mlp.down_proj"]
    s = spectra.values["model.layers.1.mlp.down_proj"].astype(float)
    assert row["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2)
    assert row["rank"] == plan.ranks()["model.layers.1.mlp.down_proj"]
    at.radio(key="table_part").set_value("LRC").run()
    assert len(at.dataframe[0].value) == plan.totals.lrc and at.dataframe[0].value["lrc"].all()
    at.text_input(key="table_pattern").set_value("layers.2.").run()
    assert set(at.dataframe[0].value["block"]) <= {2}


def test_compare_tab_puts_two_strategies_at_the_same_err(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _plan_page(llama_dir, monkeypatch, "Compare strategies")
    at.selectbox(key="compare_strategy").set_value("energy").run()
    totals = at.dataframe[0].value
    assert list(totals["strategy"]) == ["welore", "energy"]
    spectra = wc.compute_spectra(llama_dir)
    welore = wc.make_plan(spectra, wc.PlanConfig(err=50.0))
    energy = wc.make_plan(spectra, wc.PlanConfig(strategy="energy", err=welore.achieved_err))
    assert totals["achieved ERR %"].iloc[1] == pytest.approx(energy.achieved_err, abs=1e-3)
    assert totals["LRC"].iloc[1] == energy.totals.lrc


def test_uploaded_rank_map_is_checked_and_offered_for_compression(llama_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    at = _plan_page(llama_dir, monkeypatch, "Rank map")
    spectra = wc.compute_spectra(llama_dir)
    good = wc.rankmap_dict(wc.make_plan(spectra, wc.PlanConfig(strategy="uniform", err=30.0)))
    at.file_uploader(key="upload_rankmap").upload("good.json", json.dumps(good).encode(), "application/json").run()
    assert not at.exception and not at.error
    assert shown(at.success[0].value).startswith("good.json fits")
    at.button(key="apply_rankmap").click().run()
    assert at.session_state.applied_rankmap["data"]["layers"] == good["layers"]

    bad = json.loads(json.dumps(good))
    bad["layers"][0]["rank"] = 10_000
    bad["layers"][1]["name"] = "model.layers.9.mlp.nothing"
    at.file_uploader(key="upload_rankmap").set_value(("bad.json", json.dumps(bad).encode(), "application/json")).run()
    assert not at.exception
    assert shown(at.error[0].value).startswith("bad.json: ")
    problems = at.code[0].value
    assert "model.layers.9.mlp.nothing" in problems and "10000" in problems
    at.file_uploader(key="upload_rankmap").set_value(("junk.json", b"{not json", "application/json")).run()
    assert not at.exception and shown(at.error[0].value).startswith("junk.json: ")


def test_settings_come_from_the_environment_with_one_default_each(monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.settings import Settings

    assert Settings.from_env({}).eval_tokens == 8192 and Settings.from_env({}).sensitivity_tokens == 4096
    got = Settings.from_env({"WELORE_EVAL_TOKENS": "512", "WELORE_MODEL": "m", "WELORE_OTHER": "x"})
    assert (got.eval_tokens, got.model, got.ft_data) == (512, "m", str(wc.data_dir() / "tinyshakespeare" / "input.txt"))
    with pytest.raises(wc.WeLoreError, match=r"\$WELORE_FT_STEPS must be int, got 'many'"):
        Settings.from_env({"WELORE_FT_STEPS": "many"})
    pages = sorted((Path(__file__).resolve().parent.parent / "dashboard").glob("*.py"))
    readers = [p.name for p in pages if "os.environ" in p.read_text() and p.name != "settings.py"]
    assert not readers, f"pages reading the environment themselves: {readers}"


def test_user_text_reaches_the_page_as_plain_text(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank map's layer name and an upload's file name are the file author's text: an image in them would make
    the browser fetch a URL of the author's choosing. They are shown as their literal characters."""
    from markdown_it import MarkdownIt

    at = _plan_page(llama_dir, monkeypatch, "Rank map")
    good = wc.rankmap_dict(wc.make_plan(wc.compute_spectra(llama_dir), wc.PlanConfig(err=30.0)))
    crafted = "![x](http://host/x.png) **bold** <img src=y>"
    good["layers"][0]["name"] = crafted
    at.file_uploader(key="upload_rankmap").upload(f"{crafted}.json", json.dumps(good).encode(),
                                                  "application/json").run()
    assert not at.exception and at.error
    body = at.error[0].value
    html = MarkdownIt("commonmark").render(body)
    assert "<img" not in html and "<strong>" not in html and "<a " not in html, html
    assert shown(body).count(crafted) == 2  # the file name and the layer name, character for character


def test_spectra_tab_draws_chosen_layers(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.figures import spectra_lines_figure

    at = _plan_page(llama_dir, monkeypatch, "Spectra")
    at.multiselect(key="lines_self_attn.q_proj").set_value(["model.layers.0.self_attn.q_proj"]).run()
    at.radio(key="lines_scale").set_value("log").run()
    assert not at.exception
    spectra = wc.compute_spectra(llama_dir)
    fig = spectra_lines_figure(spectra, ["model.layers.0.mlp.up_proj"], normalized=False, log=True)
    assert fig.layout.yaxis.type == "log"
    assert list(fig.data[0].y) == pytest.approx(spectra.values["model.layers.0.mlp.up_proj"].astype(float))


def test_wide_spectra_heatmap_keeps_sorted_samples_and_names_layers(llama_dir: Path) -> None:
    from welore_core.figures import runs_figure, spectra_heatmap_figure

    spectra = wc.compute_spectra(llama_dir)
    fig = spectra_heatmap_figure(spectra, "mlp.down_proj", max_columns=8)
    x = list(fig.data[0].x)
    assert len(x) == 8 and x[0] == 0 and x[-1] == 31
    row = normalize(spectra.values["model.layers.1.mlp.down_proj"], "minmax")
    assert list(fig.data[0].z[1]) == pytest.approx(row[x])
    assert fig.data[0].hovertemplate.startswith("model.layers.%{y}.mlp.down_proj")
    import pandas as pd

    runs = pd.DataFrame({"strategy": [None, "welore", "welore", "uniform"], "mode": ["dense", "lrc", "lrc", "lrc"],
                         "err": [None, 40.0, 20.0, 20.0], "params": [100, 80, 90, 90], "ppl": [10.0, 30.0, 12.0, 15.0],
                         "model": "m", "tokens": 512})
    fig = runs_figure(runs, "err")
    welore = next(t for t in fig.data if t.name == "welore (lrc)")
    assert list(welore.x) == [20.0, 40.0] and list(welore.y) == [12.0, 30.0]
    dense = next(t for t in fig.data if t.name.startswith("dense"))
    assert list(dense.y) == [10.0, 10.0] and list(dense.x) == list(fig.layout.xaxis.range) == [0.0, 46.0]  # the axis
    assert runs_figure(runs, "params").layout.xaxis.title.text == "parameters (M)"


def test_a_folder_that_is_not_a_causal_lm_gets_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
                       image_size=8, patch_size=4)).save_pretrained(folder)
    monkeypatch.setenv("WELORE_MODEL", str(folder))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "not a causal LM" in shown(at.error[0].value) and str(folder) in shown(at.error[0].value)


def test_two_tabs_keep_their_own_jobs_and_a_reload_finds_them(lm_dir: Path, corpus_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from welore_core.evaluation import JobStore, wait

    for key, value in {"WELORE_MODEL": str(lm_dir), "WELORE_EVAL_DATA": str(corpus_file), "WELORE_EVAL_TOKENS": "256",
                       "WELORE_EVAL_SEQLEN": "64"}.items():
        monkeypatch.setenv(key, value)

    def tab() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        at.switch_page("dashboard/page_evaluate.py").run()
        assert not at.exception
        return at

    def job_of(at: AppTest) -> str:
        job = at.query_params["job"]
        return job[0] if isinstance(job, list) else job

    a, b = tab(), tab()
    a.selectbox[0].set_value("welore")
    a.number_input[0].set_value(60.0)
    a.button[0].click().run()
    b.run()
    assert "job" not in b.query_params and "No job launched" in b.info[0].value  # B does not see A's job
    b.selectbox[0].set_value("dense (no compression)")
    b.button[0].click().run()
    job_a, job_b = job_of(a), job_of(b)
    assert job_a != job_b
    done_a, done_b = wait(job_a, timeout=120), wait(job_b, timeout=120)
    assert done_a.status == done_b.status == "done"
    assert done_a.owner != done_b.owner and done_a.params["err"] == 60.0 and done_b.params["strategy"].startswith("dense")
    assert done_a.result["ppl"] != done_b.result["ppl"]
    reload = AppTest.from_file(APP, default_timeout=120)
    reload.query_params["job"] = job_a
    reload.switch_page("dashboard/page_evaluate.py").run()
    assert not reload.exception
    assert any(f"Job {job_a}" in m.value for m in reload.markdown)
    assert {m.label: m.value for m in reload.metric}["Perplexity"] == f"{done_a.result['ppl']:.3f}"
    assert {j.id for j in JobStore().list()} == {job_a, job_b}


def test_the_parameters_slider_plans_a_budget_and_the_others_follow(llama_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WELORE_MODEL", str(llama_dir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    at.slider(key="params").set_value(15.0).run()
    assert not at.exception and not at.error
    plan = wc.make_plan(wc.compute_spectra(llama_dir), wc.PlanConfig(params=15.0))
    assert plan_metrics(at)["Achieved ERR"] == f"{plan.achieved_err:.2f} %"
    current = explorer_data(at)["current"]  # off the grid: the browser draws the server's plan as sent
    assert (current["axis"], current["err"], current["k"]) == ("params", plan.achieved_err, plan.k)
    assert current["ranks"] == [l.rank for l in plan.layers]
    pick(at, "err", 30.0)  # back to ERR: the parameters slider follows
    by_err = wc.make_plan(wc.compute_spectra(llama_dir), wc.PlanConfig(err=30.0))
    assert at.slider(key="params").value == pytest.approx(round(by_err.totals.params_removed_pct, 2))


def test_compare_tab_matches_parameters_as_well_as_err(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _plan_page(llama_dir, monkeypatch, "Compare strategies")
    at.radio(key="compare_match").set_value("parameters").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    spectra = wc.compute_spectra(llama_dir)
    current = wc.make_plan(spectra, wc.PlanConfig(err=50.0))
    other = wc.make_plan(spectra, wc.PlanConfig(strategy=table["strategy"].iloc[1],
                                                params=current.totals.params_removed_pct))
    assert table["params removed %"].iloc[0] == pytest.approx(current.totals.params_removed_pct, abs=1e-3)
    assert table["params removed %"].iloc[1] == pytest.approx(other.totals.params_removed_pct, abs=1e-3)
