"""Fine-tuning (issue 6) on tiny seeded models: what each mode trains, resume, output folders, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import char_tokenizer, tiny_llama
from safetensors import safe_open

import welore_core as wc
from welore_core.compression.apply import compress_to, save_compressed
from welore_core.evaluation import JobCancelled
from welore_core.finetune import MODES, FinetuneConfig, build_optimizer, prepare_model, run_finetune, state_bytes
from welore_core.finetune.modes import block_matrices
from welore_core.models import LowRankLinear

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def compressed_llama(err: float = 50.0, bias: bool = False) -> tuple[torch.nn.Module, wc.CompressionReport]:
    model = tiny_llama(bias=bias)
    spectra = wc.compute_spectra(model, wc.SpectraConfig(use_cache=False))
    report = compress_to(model, wc.make_plan(spectra, wc.PlanConfig(err=err)))
    return model, report


@pytest.fixture
def compressed_dir(tmp_path: Path) -> Path:
    """A tiny LLaMA at 50 % ERR: 5 LRCs factored, 16 N-LRCs dense, with a character tokenizer."""
    model, report = compressed_llama()
    folder = save_compressed(model, tmp_path / "compressed", report)
    char_tokenizer().save_pretrained(folder)
    return folder


def config(corpus: Path, mode: str = "lrc", **kw: object) -> FinetuneConfig:
    settings = dict(mode=mode, data=str(corpus), steps=12, seqlen=32, batch_size=4, lr=1e-2, eval_tokens=512,
                    forget_tokens=0, galore_rank=8, galore_gap=4, save_every=0)
    settings.update(kw)
    return FinetuneConfig(**settings)  # type: ignore[arg-type]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def expected_trainable(model: torch.nn.Module, mode: str) -> set[str]:
    factored = [n for n, m in model.named_modules() if isinstance(m, LowRankLinear)]
    if mode == "lrc":
        return {f"{n}.{half}.weight" for n in factored for half in "AB"}
    if mode == "nlrc":
        return {f"{layer.name}.weight" for layer in wc.discover_layers(model) if layer.name not in factored}
    if mode in ("full", "galore"):
        return {n for n, _ in model.named_parameters()}
    return set(block_matrices(model))  # lora: the weights its adapters merge into


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_exactly_its_claimed_set(mode: str) -> None:
    model, report = compressed_llama()
    claimed = expected_trainable(model, mode)
    prepared = prepare_model(model, config(Path("unused.txt"), mode))
    assert all(p.requires_grad for p in prepared.trainable.values())
    if mode == "lora":  # rank-8 adapters on every linear in the blocks, the two halves of each LRC included
        linears = [m for n, m in model.named_modules() if f"{n}.weight" in claimed]
        assert len(linears) == 16 + 2 * len(report.factored)
        assert all("lora_" in n for n in prepared.trainable)
        assert prepared.trainable_params == sum(8 * (m.in_features + m.out_features) for m in linears)
    else:
        assert set(prepared.trainable) == claimed
    if mode == "galore":  # projected: exactly the 2-D block weights; embeddings, norms and head are plain Adam
        galore = next(g for g in prepared.param_groups if "rank" in g)
        names = {id(p): n for n, p in prepared.model.named_parameters()}
        assert {names[id(p)] for p in galore["params"]} == set(block_matrices(model))
    # one step: the optimizer state matches the trainable set exactly (bytes computed, not estimated)
    optimizer = build_optimizer(prepared, config(Path("unused.txt"), mode))
    prepared.model(input_ids=torch.randint(0, 64, (2, 16)), labels=torch.randint(0, 64, (2, 16))).loss.backward()
    optimizer.step()
    memory = state_bytes(prepared, optimizer)
    params = dict(model.named_parameters())
    if mode == "lora":
        expected = sum(8 * (m.in_features + m.out_features) for m in linears)
    else:
        expected = sum(params[n].numel() for n in claimed)  # from the claimed names, not the prepared set
    assert memory["grads"] == 4 * expected
    if mode != "galore":  # AdamW: two float32 moments and a step counter per trainable tensor
        assert memory["optimizer"] == 8 * prepared.trainable_params + 4 * len(prepared.trainable)
    else:  # GaLore keeps the moments of the block weights at rank <= 8, plus their projection matrices
        assert memory["optimizer"] < 8 * prepared.trainable_params


@pytest.mark.parametrize("mode", MODES)
def test_a_run_changes_exactly_the_trained_tensors_and_lowers_the_loss(mode: str, compressed_dir: Path,
                                                                       corpus_file: Path, tmp_path: Path) -> None:
    before = tensors(compressed_dir)
    claimed = expected_trainable(wc.load_model(wc.resolve_model(compressed_dir)), mode)
    result = run_finetune(compressed_dir, config(corpus_file, mode), tmp_path / "out")
    after = tensors(tmp_path / "out")
    assert set(after) == set(before) and all(after[k].dtype == before[k].dtype for k in before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == claimed
    losses = [loss for _, loss in result.loss_curve]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < losses[0]
    assert result.heldout_ppl_after < result.heldout_ppl_before
    assert result.tokens == 12 * 4 * 32 and result.tokens_per_s > 0 and result.peak_memory_mib > 0
    assert result.state_bytes["grads"] == 4 * result.trainable_params
    assert not (tmp_path / "out.checkpoints").exists()  # removed once the output is written


@pytest.mark.parametrize("mode", ["lrc", "lora", "galore"])
def test_a_cancelled_run_resumes_to_the_same_weights(mode: str, compressed_dir: Path, corpus_file: Path,
                                                     tmp_path: Path) -> None:
    settings = config(corpus_file, mode, steps=6, galore_gap=2)
    straight = run_finetune(compressed_dir, settings, tmp_path / "straight")

    def cancel_at_3(done: int, total: int, message: str) -> None:
        if done == 3 and "step" in message:
            raise JobCancelled(message)

    with pytest.raises(JobCancelled):
        run_finetune(compressed_dir, settings, tmp_path / "resumed", cancel_at_3)
    assert (tmp_path / "resumed.checkpoints" / "latest").read_text().strip() == "step-000003"
    assert not (tmp_path / "resumed").exists()
    resumed = run_finetune(compressed_dir, settings, tmp_path / "resumed")
    assert resumed.resumed_from == 3 and resumed.steps_this_run == 3
    # throughput covers the whole run, both sessions; this session's share is reported beside it
    assert resumed.tokens == straight.tokens == 6 * 4 * 32 and resumed.session_tokens == 3 * 4 * 32
    assert resumed.train_seconds > resumed.session_seconds > 0
    assert resumed.loss_curve == straight.loss_curve
    a, b = tensors(tmp_path / "straight"), tensors(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = run_finetune(compressed_dir, settings, tmp_path / "resumed")  # finished: answered from the output folder
    assert again.cached and again.key == resumed.key
    if mode == "lrc":  # a leftover checkpoint of another run is never silently reused
        with pytest.raises(JobCancelled):
            run_finetune(compressed_dir, settings, tmp_path / "other", cancel_at_3)
        with pytest.raises(wc.WeLoreError, match="holds a checkpoint of another run.*lr: 0.01 -> 0.02"):
            run_finetune(compressed_dir, config(corpus_file, mode, steps=6, galore_gap=2, lr=2e-2), tmp_path / "other")


def test_output_keeps_the_input_dtypes_reloads_and_evaluates(tmp_path: Path, corpus_file: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from welore_core.cli import main
    from welore_core.data import split_text
    from welore_core.evaluation import EvalConfig, perplexity

    model, report = compressed_llama()
    folder = save_compressed(model.to(torch.bfloat16), tmp_path / "bf16", report)
    char_tokenizer().save_pretrained(folder)
    settings = config(corpus_file, "lrc", steps=4)
    result = run_finetune(folder, settings, tmp_path / "out")
    before, after = tensors(folder), tensors(tmp_path / "out")
    assert {k: v.dtype for k, v in after.items()} == {k: v.dtype for k, v in before.items()}
    assert {v.dtype for v in after.values()} == {torch.bfloat16}
    # the reported held-out PPL is the PPL of the folder as written
    loaded = wc.load_model(wc.resolve_model(tmp_path / "out"))
    heldout = split_text(char_tokenizer(), str(corpus_file), settings.heldout, settings.seqlen).heldout
    ppl = perplexity(loaded, heldout, EvalConfig(seqlen=32, tokens=512, batch_size=4)).ppl
    assert ppl == pytest.approx(result.heldout_ppl_after, rel=1e-6)
    assert json.loads((tmp_path / "out" / "welore-finetune.json").read_text())["key"] == result.key
    code = main(["eval", str(tmp_path / "out"), "--data", str(corpus_file), "--seqlen", "32", "--tokens", "256",
                 "--batch-size", "4", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = wc.tokenize_corpus(char_tokenizer(), wc.load_corpus(str(corpus_file)))
    assert code == 0 and printed["ppl"] == pytest.approx(perplexity(loaded, ids, EvalConfig(seqlen=32, tokens=256)).ppl)


def test_dense_input_is_compressed_first_or_trained_as_all_nlrc(lm_dir: Path, corpus_file: Path,
                                                                tmp_path: Path) -> None:
    with pytest.raises(wc.WeLoreError, match="no LowRankLinear layers"):
        run_finetune(lm_dir, config(corpus_file, "lrc", steps=2), tmp_path / "x")
    result = run_finetune(lm_dir, config(corpus_file, "lrc", steps=3, err=50.0), tmp_path / "compressed")
    assert result.compressed and wc.resolve_model(tmp_path / "compressed").kind == "compressed"
    loaded = wc.load_model(wc.resolve_model(tmp_path / "compressed"))
    factors = [m for m in loaded.modules() if isinstance(m, LowRankLinear)]
    assert factors and result.trainable_params == sum(p.numel() for m in factors for p in m.parameters())
    plain = run_finetune(lm_dir, config(corpus_file, "full", steps=3), tmp_path / "plain")
    assert not plain.compressed and wc.resolve_model(tmp_path / "plain").kind == "folder"
    assert set(tensors(tmp_path / "plain")) == set(tensors(lm_dir))
    with pytest.raises(wc.WeLoreError, match="already compressed"):
        run_finetune(tmp_path / "compressed", config(corpus_file, "lrc", steps=2, err=50.0), tmp_path / "y")


def test_config_and_output_errors_name_the_bad_value(compressed_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    with pytest.raises(wc.WeLoreError, match="mode must be one of .* got 'lorra'"):
        config(corpus_file, "lorra")
    with pytest.raises(wc.WeLoreError, match="exactly one of data"):
        FinetuneConfig(data="a.txt", task="coin_flip")
    with pytest.raises(wc.WeLoreError, match="steps must be a positive integer, got 0"):
        config(corpus_file, steps=0)
    with pytest.raises(wc.WeLoreError, match="task 'mnist'"):
        FinetuneConfig(task="mnist")
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(wc.WeLoreError, match="exists and is not a model folder written by welore"):
        run_finetune(compressed_dir, config(corpus_file), precious)
    with pytest.raises(wc.WeLoreError, match="is the source model"):
        run_finetune(compressed_dir, config(corpus_file), compressed_dir)
    with pytest.raises(wc.WeLoreError, match="no such file"):
        run_finetune(compressed_dir, config(tmp_path / "missing.txt"), tmp_path / "o")
    with pytest.raises(wc.WeLoreError, match="seqlen 128 is longer than the model's 64 positions"):
        run_finetune(compressed_dir, config(corpus_file, seqlen=128), tmp_path / "o")
    assert (precious / "notes.txt").read_text() == "keep"


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from welore_core import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_result_json_last(compressed_dir: Path, corpus_file: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    code, stdout, _ = _cli(monkeypatch, capsys, "finetune", str(compressed_dir), "--mode", "nlrc", "--data",
                           str(corpus_file), "--steps", "3", "--seqlen", "32", "--lr", "0.01", "--eval-tokens", "256",
                           "--forget-tokens", "0", "-o", str(out), "--json", "-v")
    assert code == 0 and "held-out PPL" in stdout and "tokens/s" in stdout
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["mode"] == "nlrc" and result["steps"] == 3 and len(result["loss_curve"]) == 3
    record = json.loads((out / "welore-finetune.json").read_text())
    assert result == {**record, "cached": False}  # the printed result is the one stored beside the weights
    assert wc.resolve_model(out).kind == "compressed"
    runs = wc.Registry.default().frame("finetune")
    assert list(runs["mode"]) == ["nlrc"] and runs["ppl"].iloc[0] == pytest.approx(result["heldout_ppl_after"])


@pytest.mark.parametrize("argv, message", [
    (["--mode", "lorra"], "argument --mode: invalid choice: 'lorra' (choose from 'lrc', 'nlrc', 'full', 'lora', 'galore')"),
    (["--data", "/no/such.txt"], "data '/no/such.txt': no such file"),
    (["--steps", "0"], "steps must be a positive integer, got 0"),
    (["--err", "50"], "is already compressed; drop err/params/rankmap"),
])
def test_cli_errors_are_one_line_and_exit_2(argv: list[str], message: str, compressed_dir: Path, corpus_file: Path,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--mode": "lrc", "--data": str(corpus_file), "--steps": "2", "--err": None}
    base.update(dict(zip(argv[::2], argv[1::2])))
    args = [a for k, v in base.items() if v is not None for a in (k, v)]
    code, out, err = _cli(monkeypatch, capsys, "finetune", str(compressed_dir), *args, "--seqlen", "32",
                          "--forget-tokens", "0", "--eval-tokens", "256", "-o", str(tmp_path / "o"), "--json")
    assert code == 2 and err.count("\n") == 1 and err.startswith("welore: error: ") and message in err
    assert json.loads(out.strip().splitlines()[-1])["error"] in err


@pytest.mark.slow  # a fresh Python process
def test_new_core_modules_import_without_streamlit_or_training_stacks() -> None:
    import subprocess
    import sys

    code = ("import sys, welore_core.finetune, welore_core.cli; "
            "print(sorted(m for m in ('streamlit', 'transformers', 'peft', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.strip() == "[]"


def test_ratios_compare_only_runs_of_the_same_model_and_shape() -> None:
    from welore_core.finetune import runs_frame, with_ratios

    def run(mode: str, model: str, seqlen: int, tps: float) -> dict:  # type: ignore[type-arg]
        return {"mode": mode, "model": model, "data": "d", "steps": 8, "trainable_params": 10, "peak_memory_mib": 1.0,
                "state_mib": 1.0, "tokens_per_s": tps, "config": {"seqlen": seqlen, "batch_size": 4}}

    df = with_ratios(runs_frame([run("lrc", "a", 128, 300.0), run("full", "b", 128, 100.0), run("full", "a", 256, 50.0),
                                 run("full", "a", 128, 150.0)]))
    assert df["tokens_per_s_vs_full"].iloc[0] == pytest.approx(2.0)  # against model a at seqlen 128 only
