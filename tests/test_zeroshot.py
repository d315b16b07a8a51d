"""Zero-shot accuracy through lm-evaluation-harness (issue 24): local task files with the harness's own prompts, the
harness's HFLM around the model the tool loaded, rows in the registry, one-line errors. A tiny model and a handful
of examples; the comparison with the harness's own command line runs it in a child process (slow)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import welore_core as wc
from conftest import char_tokenizer, one_line, run, tiny_llama
from welore_core.evaluation.zeroshot import ZeroShotConfig, evaluate_tasks, local_tasks, measure_tasks
from welore_core.evaluation import harness_cache
from welore_core.models import load_tokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "downstream"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$WELORE_DATA with the first examples of the real BoolQ and CommonsenseQA dev files (made up when absent)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root = tmp_path / "data"
    for name, sample in (("boolq/boolq_dev.jsonl", {"question": "is the sky blue", "title": "Sky", "answer": True,
                                                    "passage": "The sky is blue on a clear day."}),
                         ("CommonsenseQA/dev_rand_split.jsonl", {
                             "answerKey": "B", "id": "x", "question": {"question_concept": "sky", "stem": "What is blue?",
                                                                        "choices": [{"label": k, "text": t} for k, t in
                                                                                    zip("ABCDE", ["grass", "sky", "sun",
                                                                                                  "soil", "snow"])]}})):
        target = root / "downstream" / name
        target.parent.mkdir(parents=True)
        real = SHARED / name
        lines = real.read_text().splitlines()[:6] if real.is_file() else [json.dumps(sample)] * 6
        target.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("WELORE_DATA", str(root))
    return root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A tiny LLaMA whose character tokenizer has an end-of-text token (the harness scores after it)."""
    folder = tmp_path / "tiny-lm"
    tiny_llama().save_pretrained(folder)
    tokenizer = char_tokenizer()
    tokenizer.eos_token = "[UNK]"
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow  # the harness's first import and two tasks
def test_tasks_run_offline_from_local_files_into_the_registry(data: Path, model_dir: Path) -> None:
    config = ZeroShotConfig(tasks=("boolq", "commonsense_qa"), limit=4, batch_size=4)
    rows = evaluate_tasks(model_dir, config)
    assert [(r["task"], r["examples"], r["cached"]) for r in rows] == [("boolq", 4, False), ("commonsense_qa", 4, False)]
    assert all(0.0 <= r["acc"] <= 1.0 and r["acc_stderr"] is not None for r in rows)
    recorded = wc.Registry.default().frame("zeroshot").set_index("task")
    assert recorded.loc["boolq", "acc"] == rows[0]["acc"] and recorded.loc["boolq", "limit_n"] == 4
    assert recorded.loc["boolq", "source_model"] == model_dir.name and recorded.loc["boolq", "harness"]
    assert [r["cached"] for r in evaluate_tasks(model_dir, config)] == [True, True]  # an identical request
    assert not evaluate_tasks(model_dir, ZeroShotConfig(tasks=("boolq",), limit=3))[0]["cached"]
    folder, _ = local_tasks()
    text = (folder / "boolq.yaml").read_text()  # the harness's own task file, the data swapped for the local file
    assert "include: " in text and "super_glue/boolq/default.yaml" in text and str(data) in text


@pytest.mark.slow  # the harness's command line in a child process
def test_the_dense_row_equals_the_harness_command_line(data: Path, model_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eval", str(model_dir), "--tasks", "boolq", "--limit", "4", "--json")
    ours = json.loads(out.strip().splitlines()[-1])["tasks"][0]["acc"]
    folder, _ = local_tasks()
    done = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={model_dir},dtype=float32", "--tasks", "boolq", "--include_path", str(folder),
                           "--limit", "4", "--batch_size", "8", "--device", "cpu"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("|boolq"))
    printed = re.split(r"\s*\|\s*", row.strip("|"))[6]  # |Tasks|Version|Filter|n-shot|Metric|   |Value|...
    assert code == 0 and float(printed) == pytest.approx(ours, abs=0.5 * 10 ** -len(printed.split(".")[-1]))


class Stopped(Exception):
    """A run cancelled part-way (not one of the errors the harness's data loading is translated from)."""


@pytest.mark.slow  # the harness three times on a handful of requests
def test_a_cancelled_task_stops_within_a_batch_and_resumes_from_the_requests_scored(
        data: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ZeroShotConfig(tasks=("boolq",), limit=6, batch_size=1)  # one request a forward pass
    identity = {"fingerprint": "f", "plan_hash": "dense", "tokenizer": "t", "weights_dtype": "float32"}
    model = wc.load_model(wc.resolve_model(model_dir))
    tokenizer = load_tokenizer(wc.resolve_model(model_dir))
    calls = {"n": 0}

    def count(*_: object) -> None:
        calls["n"] += 1

    model.register_forward_pre_hook(count)
    whole = measure_tasks(config, identity, {"model": "tiny"}, lambda: (model, tokenizer), wc.Registry(tmp_path / "a.sqlite"))
    passes = calls["n"]
    assert passes >= 6  # every example scored in its own passes

    registry = wc.Registry(tmp_path / "b.sqlite")
    calls.update(n=0)
    monkeypatch.setattr(harness_cache, "BATCH_REPORT_S", 0.0)  # a report before every pass
    seen: list[str] = []

    def cancel(done: int, total: int, message: str) -> None:  # as the dashboard's Cancel does, from the callback
        seen.append(message)
        if message == "harness: boolq (batch 4)":
            raise Stopped

    with pytest.raises(Stopped):  # cancelled before its fourth forward pass: three requests answered
        measure_tasks(config, identity, {"model": "tiny"}, lambda: (model, tokenizer), registry, cancel)
    assert calls["n"] == 4 and seen[0] == "harness: boolq"
    partial = list((tmp_path / "harness-requests").glob("*_rank0.db"))
    assert len(partial) == 1 and registry.lookup(partial[0].name.removesuffix("_rank0.db")) is None
    calls.update(n=0)
    resumed = measure_tasks(config, identity, {"model": "tiny"}, lambda: (model, tokenizer), registry)
    assert calls["n"] == passes - 3  # only the requests not answered before the cancel
    assert [(r["acc"], r["acc_stderr"], r["examples"]) for r in resumed] == \
        [(r["acc"], r["acc_stderr"], r["examples"]) for r in whole]
    assert not list((tmp_path / "harness-requests").iterdir())  # the answers live in the registry now


@pytest.mark.slow  # compress, then the harness
def test_a_compressed_folder_row_names_its_source(data: Path, model_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "cp"
    assert run(capsys, "compress", str(model_dir), "--err", "50", "-o", str(folder))[0] == 0
    evaluate_tasks(folder, ZeroShotConfig(tasks=("boolq",), limit=2))
    row = wc.Registry.default().frame("zeroshot").iloc[0]
    assert (row["model"], row["source_model"], row["strategy"], row["err"]) == ("cp", model_dir.name, "welore", 50.0)


@pytest.mark.parametrize("argv, message", [
    pytest.param(["--tasks", "bolq"], "unknown harness task 'bolq'; closest: boolq",
                 marks=pytest.mark.slow),  # the closest names need the harness's index of all its tasks
    (["--tasks", "boolq", "--limit", "0"], "limit must be at least 1 example"),
    (["--tasks", "boolq,,commonsense_qa"], "--tasks has an empty item"),
])
def test_bad_task_requests_are_one_line(argv: list[str], message: str, data: Path, model_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "eval", str(model_dir), *argv)
    assert code == 2 and message in one_line(err)


def test_a_task_file_with_bad_json_names_the_file_and_line(data: Path, model_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = data / "downstream" / "boolq" / "boolq_dev.jsonl"
    bad.write_text(bad.read_text() + "{not json\n")
    code, _, err = run(capsys, "eval", str(model_dir), "--tasks", "boolq", "--limit", "2")
    assert code == 2 and one_line(err).startswith(f"{bad}: line 7 is not a JSON object")


@pytest.mark.slow  # a task not found locally is looked up in the harness's whole index, then on the hub
def test_a_task_without_local_data_offline_says_where_it_looked(data: Path, model_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (data / "downstream" / "boolq" / "boolq_dev.jsonl").unlink()
    code, _, err = run(capsys, "eval", str(model_dir), "--tasks", "boolq", "--limit", "2")
    message = one_line(err)
    assert code == 2 and message.startswith("task boolq: the harness could not load its data")
    assert str(data / "downstream" / "boolq" / "boolq_dev.jsonl") in message


@pytest.mark.slow  # a sweep of two points, each with the harness
def test_a_sweep_puts_accuracy_beside_perplexity(data: Path, model_dir: Path, corpus_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "sweep", str(model_dir), "--errs", "60", "--strategies", "welore", "--data",
                       str(corpus_file), "--seqlen", "32", "--tokens", "64", "--tasks", "boolq", "--limit", "2",
                       "-o", str(out))
    assert code == 0, err
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["strategy"] for r in rows] == ["dense", "welore"]
    assert all(0.0 <= r["acc_boolq"] <= 1.0 and "acc_stderr_boolq" in r for r in rows)
    recorded = wc.Registry.default().frame("zeroshot")
    assert sorted(recorded["origin"]) == ["sweep", "sweep"] and set(recorded["strategy"].dropna()) == {"welore"}
    assert recorded["source_model"].tolist() == [model_dir.name] * 2


@pytest.mark.slow  # a background job with the harness, in AppTest
def test_the_evaluate_page_measures_tasks_in_the_same_job_and_charts_accuracy(data: Path, model_dir: Path,
                                                                              corpus_file: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from streamlit.testing.v1 import AppTest

    from welore_core.evaluation import wait

    for key, value in {"WELORE_MODEL": str(model_dir), "WELORE_EVAL_DATA": str(corpus_file), "WELORE_EVAL_TOKENS": "64",
                       "WELORE_EVAL_SEQLEN": "32", "WELORE_TASK_LIMIT": "2"}.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.switch_page("dashboard/page_evaluate.py").run()
    assert not at.exception
    at.multiselect[0].set_value(["boolq"])
    at.button[0].click().run()  # the form's Launch button
    assert not at.exception and not at.error
    state = wait(at.query_params["job"][0] if isinstance(at.query_params["job"], list) else at.query_params["job"],
                 timeout=180)
    assert state.status == "done", state.error
    assert 0.0 <= state.result["acc_boolq"] <= 1.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(m.label == "Accuracy: boolq" for m in at.metric):
        at.run()
    assert any(m.label == "Accuracy: boolq" for m in at.metric)
    row = wc.Registry.default().frame("zeroshot").iloc[0]
    assert (row["task"], row["origin"], row["limit_n"], row["strategy"]) == ("boolq", "dashboard", 2, "welore")
    next(s for s in at.selectbox if s.label == "Measure").set_value("accuracy: boolq").run()
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    (trace,) = [t for t in spec["data"] if t["name"] == "welore (lrc)"]
    assert spec["layout"]["yaxis"]["title"]["text"] == "accuracy" and trace["y"] is not None
