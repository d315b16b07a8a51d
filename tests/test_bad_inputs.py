"""The last bad inputs (issue 12): each fails with one clear line, and nothing bad is stored or left behind."""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from conftest import char_tokenizer, one_line, run, tiny_llama

import welore_core as wc
from welore_core.compression.plan import rankmap as rankmap_mod
from welore_core.utils import atomic_folder, atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent


# 1. a full disk --------------------------------------------------------------------------------------------------

def test_compress_into_a_full_disk_is_one_line_naming_the_folder(lm_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import SafetensorError

    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    monkeypatch.setattr(sys.modules["welore_core.compression.apply.folder"], "save_file", full)  # in memory

    def full_write(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wc.models.ShardWriter, "write", full_write)  # streamed, tensor by tensor
    out = tmp_path / "compressed"
    code, _, err = run(capsys, "compress", str(lm_dir), "--err", "50", "-o", str(out))
    message = one_line(err)
    assert code == 2 and message.startswith(f"{out}: no space left on its device (the device filled up after ")
    assert not out.exists() and not list(tmp_path.glob(".compressed.tmp-*"))  # the temp folder is gone too


def test_a_folder_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "big"
    with pytest.raises(wc.WeLoreError, match=r"big: no space left on its device \(needs about [\d,.]+ MiB"):
        with atomic_folder(target, needed=1 << 62):
            raise AssertionError("nothing may be written")
    assert not target.exists()


def test_cache_writes_into_a_full_disk_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", full)
    with pytest.raises(wc.WeLoreError,
                       match=r"record\.sv: no space left on its device \(the device filled up writing about 0\.0 MiB"):
        atomic_write_bytes(tmp_path / "record.sv", b"12345")


def test_spectra_with_a_full_cache_disk_exit_2(llama_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", full)
    code, _, err = run(capsys, "spectra", str(llama_dir))
    assert code == 2 and "no space left on its device" in one_line(err)


def test_a_full_registry_disk_is_one_line_naming_the_database(lm_dir: Path, corpus_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    class Full:
        def __enter__(self) -> "Full":
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def execute(self, *args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        def close(self) -> None:
            pass

    registry = wc.Registry.default()
    monkeypatch.setattr(wc.Registry, "lookup", lambda self, key: None)
    monkeypatch.setattr(sys.modules["welore_core.evaluation.registry"], "connect", lambda path, schema, migrate=None: Full())
    with pytest.raises(wc.WeLoreError, match=r"registry\.sqlite: no space left on its device"):
        wc.evaluate_model(lm_dir, wc.EvalConfig(data=str(corpus_file), seqlen=32, tokens=64), registry=registry)


# 2. a bad dynamics config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"hidden_size": -64}, "model.hidden_size must be a positive integer, got -64"),
    ({"hidden_size": 50}, "model.hidden_size 50 is not divisible by num_attention_heads 4"),
    ({"num_key_value_heads": 3}, "model.num_attention_heads 4 is not divisible by num_key_value_heads 3"),
    ({"num_hidden_layers": "two"}, "model.num_hidden_layers must be a positive integer, got 'two'"),
    ({"hidden_size": 36, "num_attention_heads": 4, "num_key_value_heads": 4}, "head dimension 9 must be even"),
])
def test_a_bad_dynamics_config_names_the_field(change: dict[str, object], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    preset = wc.load_preset("tiny")
    preset["model"].update(change)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    code, _, err = run(capsys, "dynamics", "--config", str(path), "-o", str(tmp_path / "run"))
    assert code == 2 and message in one_line(err) and not (tmp_path / "run").exists()


# 3. non-finite weights and losses ------------------------------------------------------------------------------------

def test_eval_of_nan_weights_names_the_layer_and_stores_nothing(tmp_path: Path, corpus_file: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    char_tokenizer().save_pretrained(tmp_path / "nan")
    for _ in range(2):  # the second request must not get a stored bad value back
        code, _, err = run(capsys, "eval", str(tmp_path / "nan"), "--data", str(corpus_file), "--seqlen", "32",
                           "--tokens", "128")
        assert code == 2 and "weight model.layers.1.mlp.up_proj.weight holds NaN or inf" in one_line(err)
    assert wc.Registry.default().frame("eval").empty


def test_the_registry_refuses_a_non_finite_result(tmp_path: Path) -> None:
    registry = wc.Registry(tmp_path / "r.sqlite")
    with pytest.raises(wc.WeLoreError, match="not recording a run whose nll, ppl is not finite"):
        registry.record("k", {"kind": "eval", "ppl": float("inf"), "nll": float("nan")}, {"ppl": float("inf")})
    assert registry.frame().empty


def test_a_diverging_fine_tune_stops_before_the_bad_update(tmp_path: Path, corpus_file: Path) -> None:
    spectra_model = tiny_llama()
    report = wc.compress_to(spectra_model, wc.make_plan(wc.compute_spectra(spectra_model), wc.PlanConfig(err=50)))
    folder = wc.save_compressed(spectra_model, tmp_path / "c", report)
    char_tokenizer().save_pretrained(folder)
    config = wc.FinetuneConfig(mode="full", data=str(corpus_file), steps=6, seqlen=32, lr=1e30, eval_tokens=256,
                               forget_tokens=0, save_every=1, max_grad_norm=0.0)
    with pytest.raises(wc.WeLoreError, match=r"full: the training loss became (nan|inf) at step \d, so training "
                                             r"stopped before that update \(the last good checkpoint is "):
        wc.run_finetune(folder, config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    steps = sorted((tmp_path / "out.checkpoints").glob("step-*"))
    assert steps and all(torch.isfinite(p).all() for p in wc.load_model(wc.resolve_model(steps[-1] / "model")).parameters())


# 4. a closed pipe --------------------------------------------------------------------------------------------------

@pytest.mark.slow  # a fresh Python process
def test_plan_into_a_closed_pipe_exits_quietly(llama_dir: Path, isolated_cache: Path) -> None:
    env = {**os.environ, "WELORE_CACHE": str(isolated_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "welore_core", "plan", str(llama_dir), "--err", "30"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = [proc.stdout.readline() for _ in range(2)]  # `| head -2`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 141 and b"model" in first[0]
    assert "Error" not in err and "error" not in err, err


# 5./6. hostile rank maps -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"schema": "welore.rankmap/v1", "layers": ' + "[" * 50_000 + "]" * 50_000 + "}"])
def test_deeply_nested_rank_map_is_a_rank_map_error(text: str) -> None:
    with pytest.raises(wc.RankMapError, match="nested too deeply"):
        wc.read_rankmap(text)


def test_an_oversized_rank_map_file_is_refused_before_it_is_parsed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.json"
    path.write_bytes(b"{" + b" " * (rankmap_mod.MAX_BYTES + 1) + b"}")

    def parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file over the cap must not be parsed")

    monkeypatch.setattr(json, "loads", parse)
    with pytest.raises(wc.RankMapError, match="too large for a rank map"):
        wc.read_rankmap(path)


def test_too_many_layers_are_refused_before_the_schema_check() -> None:
    data = {"schema": "welore.rankmap/v1", "layers": [{}] * (rankmap_mod.MAX_LAYERS + 1)}
    with pytest.raises(wc.RankMapError, match="more than a rank map can hold") as caught:
        wc.read_rankmap(json.dumps(data))
    assert not caught.value.problems  # refused as a whole, not validated item by item


def test_the_dashboard_upload_cap_is_the_rank_map_cap() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == rankmap_mod.MAX_BYTES


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_rank_map_with_a_non_finite_number_is_refused(value: str, llama_dir: Path) -> None:
    plan = wc.make_plan(wc.compute_spectra(llama_dir), wc.PlanConfig(err=30))
    text = json.dumps(wc.rankmap_dict(plan)).replace(f'"k": {plan.k}', f'"k": {value}')
    assert value in text
    with pytest.raises(wc.RankMapError, match=f"{value} is not a number JSON allows"):
        wc.read_rankmap(text)


# 7. argparse errors --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["plan", "--strategy", "bogus"], "plan: argument --strategy: invalid choice: 'bogus' (choose from 'welore', "
                                      "'uniform', 'energy', 'whitened', 'greedy', 'fisher')"),
    (["eval", "--tokens", "many"], "eval: argument --tokens: invalid int value: 'many'"),
    (["compress", "--err", "30"], "compress: the following arguments are required: -o/--output"),
    (["frobnicate"], "argument command: invalid choice: 'frobnicate' (choose from"),
])
def test_argparse_errors_are_the_same_one_line(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2 and one_line(err).startswith(message)
    assert json.loads(out.strip().splitlines()[-1])["error"] == one_line(err)


# 8. the smaller ones ---------------------------------------------------------------------------------------------------

def test_a_gguf_that_does_not_load_leaves_no_lock_file(tmp_path: Path, isolated_cache: Path) -> None:
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(wc.WeLoreError, match="could not load this GGUF"):
        wc.resolve_model(fake)
    assert not list((isolated_cache / "models").glob("*.lock"))


def test_a_seqlen_past_the_positions_is_named_before_the_budget(lm_dir: Path, corpus_file: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "eval", str(lm_dir), "--data", str(corpus_file), "--seqlen", "100000",
                       "--tokens", "512")
    assert code == 2 and one_line(err) == "seqlen 100000 is longer than the model's 64 positions"
    code, _, err = run(capsys, "eval", str(lm_dir), "--data", str(corpus_file), "--seqlen", "64", "--tokens", "32")
    assert code == 2 and one_line(err) == "token budget 32 is smaller than one window of seqlen 64"


def test_data_that_is_a_folder_says_so(lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "eval", str(lm_dir), "--data", str(tmp_path))
    assert code == 2 and one_line(err).startswith(f"data {str(tmp_path)!r}: is a folder; pass a text file")


def test_a_bogus_sweep_strategy_fails_before_any_model_is_loaded(monkeypatch: pytest.MonkeyPatch,
                                                                 corpus_file: Path) -> None:
    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(sys.modules["welore_core.evaluation.sweep"], "load_for_eval", no_load)
    with pytest.raises(wc.WeLoreError, match="strategy must be one of .* got 'bogus'"):
        wc.perplexity_sweep(None, [10.0], ["welore", "bogus"], wc.EvalConfig(data=str(corpus_file)))
