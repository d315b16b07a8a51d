"""Registry attribution (issue 28): a compressed folder's measurements land on its source model's charts, whichever
path measured them; old registries migrate in place; the chart draws a baseline, single runs and its own range."""
from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import welore_core as wc
from conftest import run
from welore_core.figures import runs_figure

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _compressed_from_the_cli(lm_dir: Path, corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             err: str = "10") -> Path:
    """The issue's story: evaluate the model, plan at ERR 10, compress every layer with that rank map, evaluate
    the folder."""
    data = ["--data", str(corpus_file), "--seqlen", "32", "--tokens", "256"]
    assert run(capsys, "eval", str(lm_dir), *data)[0] == 0
    rankmap, folder = tmp_path / "rm.json", tmp_path / f"cp{err}"
    assert run(capsys, "plan", str(lm_dir), "--err", err, "-o", str(rankmap))[0] == 0
    assert run(capsys, "compress", str(lm_dir), "--rankmap", str(rankmap), "--all-layers", "-o", str(folder))[0] == 0
    assert run(capsys, "eval", str(folder), *data)[0] == 0
    return folder


def test_a_cli_compression_carries_its_source_and_plan(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = _compressed_from_the_cli(lm_dir, corpus_file, tmp_path, capsys)
    runs = wc.Registry.default().frame("eval").set_index("model")
    row, dense = runs.loc[folder.name], runs.loc[lm_dir.name]
    rankmap = json.loads((folder / "rankmap.json").read_text())
    assert (row["source_model"], row["source_fingerprint"]) == (lm_dir.name, dense["fingerprint"])
    assert (row["strategy"], row["err"], row["k"], row["mode"], row["target"]) == \
        ("welore", 10.0, rankmap["k"], "all", "err 10")
    assert row["achieved_err"] == pytest.approx(rankmap["achieved_err"])
    assert row["params_removed_pct"] == pytest.approx(rankmap["totals"]["params_removed_pct"])
    assert row["folder"] == str(folder.resolve()) and row["origin"] == "eval" and pd.isna(row["finetuned"])
    code, out, _ = run(capsys, "runs", str(folder), "--json")  # a folder's runs are its source model's
    listed = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and listed["model"] == lm_dir.name
    assert [(r["model"], r["reason"]) for r in listed["runs"]] == [(lm_dir.name, ""), (folder.name, "")]


def test_the_evaluate_page_charts_a_cli_compression_on_its_source_model(lm_dir: Path, corpus_file: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = _compressed_from_the_cli(lm_dir, corpus_file, tmp_path, capsys)
    params = int(wc.Registry.default().frame("eval").set_index("model").loc[folder.name, "params"])
    monkeypatch.setenv("WELORE_MODEL", str(lm_dir))
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("dashboard/page_evaluate.py").run()
    assert not at.exception

    def values(v: object) -> list[float]:  # plotly's JSON packs arrays as {"dtype", "bdata"} (base64)
        if isinstance(v, dict):
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
        return list(v)  # type: ignore[call-overload]

    def traces() -> dict[str, tuple[list[float], list[float]]]:
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        return {t["name"]: (values(t["x"]), values(t["y"])) for t in spec["data"]}

    shown = traces()
    assert shown["welore (all)"][0] == [10.0]  # at its ERR, a marker of one run
    assert any(name.startswith("dense (") for name in shown)
    at.radio[0].set_value("parameters").run()  # the x axis radio
    assert traces()["welore (all)"][0] == [pytest.approx(params / 1e6)]


def test_a_dense_only_registry_draws_the_baseline_across_the_axis() -> None:
    dense = pd.DataFrame({"strategy": [None], "mode": ["folder"], "err": [None], "params": [135_000_000],
                          "ppl": [24.01], "model": ["m"], "tokens": [512]})
    fig = runs_figure(dense, "err")
    (line,) = [t for t in fig.data if t.name == "dense (24.01)"]
    assert list(fig.layout.xaxis.range) == [0.0, 100.0] and list(line.x) == [0.0, 100.0] and list(line.y) == [24.01] * 2
    assert fig.layout.annotations[0].text == "dense 24.01"
    one = pd.concat([dense, pd.DataFrame({"strategy": ["welore"], "mode": ["all"], "err": [10.0], "params": [1e8],
                                          "ppl": [30.0], "model": ["cp10"], "tokens": [512]})])
    fig = runs_figure(one, "err")
    (point,) = [t for t in fig.data if t.name == "welore (all)"]
    assert list(point.x) == [10.0] and "markers" in point.mode and fig.layout.xaxis.range[1] > 10.0


def test_runs_a_chart_cannot_place_are_listed_with_the_reason() -> None:
    runs = pd.DataFrame({"model": ["m", "cp", "gone"], "source_model": ["m", "m", None], "strategy": [None, "welore", None],
                         "mode": ["folder", "lrc", "compressed"], "err": [None, None, None], "params": [10, 8, 8],
                         "ppl": [5.0, 6.0, 7.0], "attribution": [None, None, "unattributed: gone"]})
    placed, unplaced = wc.chart_runs(runs, "m", "err")
    assert list(placed["model"]) == ["m"] and list(unplaced["reason"]) == ["no ERR recorded"]
    assert list(wc.chart_runs(runs, "m", "params")[0]["model"]) == ["m", "cp"]
    assert list(wc.chart_runs(runs, "gone", "err")[1]["reason"]) == ["unattributed: gone"]


OLD_SCHEMA = """CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, created TEXT NOT NULL,
    kind TEXT NOT NULL, model TEXT, fingerprint TEXT, plan_hash TEXT, strategy TEXT, err REAL, k REAL, mode TEXT,
    params INTEGER, ppl REAL, nll REAL, dataset TEXT, data_hash TEXT, tokens INTEGER, token_budget INTEGER,
    seqlen INTEGER, seconds REAL, tokens_per_s REAL, version TEXT, result TEXT)"""


def test_an_old_registry_migrates_in_place_and_keeps_every_row(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _compressed_from_the_cli(lm_dir, corpus_file, tmp_path, capsys)
    fingerprint = wc.source_fingerprint(wc.resolve_model(folder))
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:  # as the tool wrote it before attribution: the folder's row names only itself
        conn.execute(OLD_SCHEMA)
        rows = [("a", "eval", lm_dir.name, "f0", None, None, "folder", 24.0),
                ("b", "eval", folder.name, fingerprint, None, None, "compressed", 30.0),
                ("c", "eval", "vanished", "f9", None, None, "compressed", 40.0),
                ("d", "eval", lm_dir.name, "f0", "welore", 30.0, "lrc", 28.0)]
        conn.executemany("INSERT INTO runs (key, created, kind, model, fingerprint, strategy, err, mode, ppl) "
                         "VALUES (?, '2026-01-01', ?, ?, ?, ?, ?, ?, ?)", rows)
    monkeypatch.chdir(tmp_path)  # the folder's name points at it from here, as it did when it was evaluated
    frame = wc.Registry(db).frame().set_index("model")
    assert len(frame) == 4 and sorted(frame["ppl"]) == [24.0, 28.0, 30.0, 40.0]
    moved = frame.loc[folder.name]
    assert (moved["source_model"], moved["strategy"], moved["err"], moved["mode"]) == (lm_dir.name, "welore", 10.0,
                                                                                       "all")
    assert frame.loc["vanished", "attribution"].startswith("unattributed") and pd.isna(frame.loc["vanished",
                                                                                                 "source_model"])
    assert frame.loc[lm_dir.name, "source_model"].tolist() == [lm_dir.name, lm_dir.name]
    assert len(wc.Registry(db).frame()) == 4  # a second open finds it migrated


def test_a_finetuned_folder_is_never_drawn_as_a_plain_compression(lm_dir: Path, corpus_file: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = _compressed_from_the_cli(lm_dir, corpus_file, tmp_path, capsys, err="50")
    tuned = tmp_path / "tuned"
    code, _, err = run(capsys, "finetune", str(folder), "--data", str(corpus_file), "--steps", "2", "--seqlen", "16",
                       "--eval-tokens", "32", "--forget-tokens", "0", "-o", str(tuned))
    assert code == 0, err
    assert run(capsys, "eval", str(tuned), "--data", str(corpus_file), "--seqlen", "32", "--tokens", "256")[0] == 0
    runs = wc.Registry.default().frame()
    evals = runs[runs["kind"] == "eval"].set_index("model")
    assert evals.loc["tuned", "finetuned"] == "lrc" and evals.loc["tuned", "source_model"] == lm_dir.name
    row = runs[runs["kind"] == "finetune"].iloc[0]
    assert (row["source_model"], row["finetuned"], row["origin"]) == (lm_dir.name, "lrc", "finetune")
    placed, _ = wc.chart_runs(runs[runs["kind"] == "eval"], lm_dir.name)
    names = [t.name for t in runs_figure(placed).data]
    assert "welore (all, fine-tuned lrc)" in names and "welore (all)" in names


def test_the_measured_cost_curve_takes_one_setting_of_one_strategy() -> None:
    runs = pd.DataFrame({
        "model": ["m", "a", "b", "c", "d", "e"], "source_model": ["m", "m", "m", "m", "m", "other"],
        "strategy": [None, "welore", "welore", "welore", "uniform", "welore"], "mode": ["folder", "lrc", "lrc", "lrc",
                                                                                       "lrc", "lrc"],
        "err": [None, 60.0, 20.0, 20.0, 30.0, 40.0], "params": [10, 6, 8, 8, 7, 7], "ppl": [5.0, 30.0, 9.0, 11.0, 8.0, 1.0],
        "dataset": ["w", "w", "w", "w", "w", "w"], "seqlen": [64] * 6, "token_budget": [512] * 6})
    curve = wc.measured_cost(runs, "m", "welore")
    assert curve == {"points": [[20.0, 10.0], [60.0, 30.0]], "setting": "w · 64 · 512", "dense": 5.0}
    assert wc.measured_cost(runs, "m", "energy") == {"points": [], "dense": None, "setting": ""}


def test_the_explorer_has_one_accuracy_curve_per_task_beside_perplexity() -> None:
    """Zero-shot rows (no perplexity) make a curve per task; a task measured only dense, or only for another
    strategy, makes none; perplexity comes first even when empty."""
    rows = [("m", None, None, "boolq", 0.60, 100), ("a", "welore", 20.0, "boolq", 0.58, 100),
            ("b", "welore", 60.0, "boolq", 0.50, 100), ("c", "welore", 60.0, "boolq", 0.40, None),
            ("a", "welore", 20.0, "commonsense_qa", 0.25, 100), ("m", None, None, "piqa", 0.7, 100),
            ("d", "uniform", 20.0, "piqa", 0.6, 100)]
    runs = pd.DataFrame([{"model": model, "source_model": "m", "strategy": strategy, "err": err, "ppl": None,
                          "mode": "lrc" if strategy else "folder", "params": 9, "task": task, "acc": acc,
                          "num_fewshot": 0, "limit_n": limit, "harness": "0.4.13", "dataset": None, "seqlen": None,
                          "token_budget": None} for model, strategy, err, task, acc, limit in rows])
    curves = wc.measured_costs(runs, "m", "welore")
    assert [c["label"] for c in curves] == ["measured PPL", "measured boolq acc", "measured commonsense_qa acc"]
    assert curves[0]["points"] == [] and not curves[0]["higher"]
    boolq = curves[1]
    assert boolq["higher"] and boolq["points"] == [[20.0, 0.58], [60.0, 0.50]]  # the limit-100 setting: 3 rows
    assert boolq["dense"] == 0.60 and boolq["setting"] == "0-shot · limit 100 · harness 0.4.13"
    assert curves[2]["dense"] is None
    assert [c["label"] for c in wc.measured_costs(runs, "m", "uniform")] == ["measured PPL", "measured piqa acc"]
