"""Distillation from the dense model (issue 25): the chunked KL, the teacher each input gets, every mode, and
the refusals."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import char_tokenizer, one_line, run, tiny_gpt2, tiny_llama

import welore_core as wc
from welore_core.compression.apply import compress_to, save_compressed
from welore_core.finetune import FinetuneConfig, run_finetune
from welore_core.finetune import distill
from welore_core.finetune.batches import load_data
from welore_core.models import MANIFEST

pytestmark = pytest.mark.usefixtures("one_thread")


def _kl_whole(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    """The same loss without chunks: both full logits at once."""
    log_t, log_s = F.log_softmax(teacher / t, -1), F.log_softmax(student / t, -1)
    per = (log_t.exp() * (log_t - log_s)).sum(-1)  # (batch, seq)
    return t * t * per[mask].sum() / mask.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_the_chunked_kl_is_the_kl_over_the_scored_positions(monkeypatch: pytest.MonkeyPatch,
                                                            temperature: float) -> None:
    monkeypatch.setattr(distill, "CHUNK", 3)  # several chunks, the last one partial
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden, student = torch.randn(2, 7, 8, generator=g), torch.randn(2, 7, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (2, 7), generator=g)
    labels[0, 4:] = -100  # an answer that ends early: those positions are not scored
    batch = {"input_ids": labels.clamp_min(0), "labels": labels, "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    batch["attention_mask"][1, 6] = 0
    mask = distill.scored_positions(batch)
    assert mask.tolist()[0] == [True, True, True, False, False, False, False]  # position t scores label t + 1
    assert mask.tolist()[1] == [True] * 5 + [False, False]
    got = distill.distill_kl(student, hidden, head, mask, temperature)
    with torch.no_grad():
        teacher = head(hidden)
    want = _kl_whole(student, teacher, mask, temperature)
    torch.testing.assert_close(got, want)
    got.backward()
    grad = student.grad.clone()
    student.grad = None
    want.backward()
    torch.testing.assert_close(grad, student.grad)
    assert float(distill.distill_kl(teacher.clone(), hidden, head, mask, temperature)) == pytest.approx(0, abs=1e-6)


@pytest.fixture
def compressed_dir(lm_dir: Path, tmp_path: Path) -> Path:
    """The tiny LLaMA folder compressed to 50 % ERR through the CLI path: its manifest records where its dense
    model is."""
    model = wc.load_model(wc.resolve_model(lm_dir))
    report = compress_to(model, wc.make_plan(wc.compute_spectra(lm_dir), wc.PlanConfig(err=50)))
    folder = save_compressed(model, tmp_path / "compressed", report, lm_dir, lm_dir.name)
    return folder


def settings(corpus: Path, mode: str = "lrc", **kw: object) -> FinetuneConfig:
    values = dict(mode=mode, data=str(corpus), steps=3, seqlen=32, batch_size=2, lr=1e-2, eval_tokens=256,
                  forget_tokens=0, galore_rank=8, galore_gap=2, save_every=0, distill=True)
    values.update(kw)
    return FinetuneConfig(**values)  # type: ignore[arg-type]


def test_the_first_step_minimises_the_kl_to_the_dense_model_the_folder_was_made_from(
        compressed_dir: Path, lm_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    manifest = json.loads((compressed_dir / MANIFEST).read_text())
    assert manifest["base_path"] == str(lm_dir.resolve())
    config = settings(corpus_file, temperature=2.0, alpha=0.25)
    result = run_finetune(compressed_dir, config, tmp_path / "out")
    # the loss of step 1, from the untouched student and the dense teacher, computed here without chunks
    student, teacher = (wc.load_model(wc.resolve_model(p)) for p in (compressed_dir, lm_dir))
    torch.manual_seed(config.seed)
    batch = load_data(char_tokenizer(), config).batch(config, 0)
    with torch.no_grad():
        out = student(**batch)
        kl = _kl_whole(out.logits, teacher(**batch).logits, distill.scored_positions(batch), 2.0)
    assert result.loss_curve[0][1] == pytest.approx(float(0.75 * kl + 0.25 * out.loss), rel=1e-4)
    assert result.config["teacher"] == "" and result.config["distill"]
    # the teacher is part of the run's identity by its weights, not its path: the same weights elsewhere name the
    # same run (answered from the output folder), other weights another one
    shutil.copytree(lm_dir, tmp_path / "copy")
    again = run_finetune(compressed_dir, replace(config, teacher=str(tmp_path / "copy")), tmp_path / "out")
    assert again.cached and again.key == result.key
    other = tmp_path / "other"
    tiny_llama(seed=5).save_pretrained(other)
    third = run_finetune(compressed_dir, replace(config, teacher=str(other)), tmp_path / "third")
    assert not third.cached and third.key != result.key and third.loss_curve[0][1] != result.loss_curve[0][1]


@pytest.mark.parametrize("mode", ["nlrc", "full", "lora", "galore"])
def test_every_mode_distils(mode: str, compressed_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    result = run_finetune(compressed_dir, settings(corpus_file, mode), tmp_path / mode)
    assert len(result.loss_curve) == 3 and all(loss > 0 for _, loss in result.loss_curve)
    assert result.tokens_per_s > 0 and result.peak_memory_mib > 0


def test_a_dense_input_compressed_first_is_its_own_teacher(lm_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    result = run_finetune(lm_dir, settings(corpus_file, err=50.0, steps=2), tmp_path / "out")
    assert result.compressed and result.loss_curve[0][1] > 0
    # uncompressed, the model would teach itself: refused, as is a teacher with another vocabulary
    with pytest.raises(wc.WeLoreError, match="it would teach itself; pass --teacher MODEL"):
        run_finetune(lm_dir, settings(corpus_file, mode="full"), tmp_path / "self")
    other = tmp_path / "gpt2"
    tiny_gpt2().save_pretrained(other)  # vocabulary 64 + ... differs from the LLaMA's
    big = tiny_llama()
    big.resize_token_embeddings(80)
    big.save_pretrained(tmp_path / "wide")
    with pytest.raises(wc.WeLoreError, match=r"teacher wide: its vocabulary \(80\) is not the student's \(64\)"):
        run_finetune(lm_dir, settings(corpus_file, mode="full", teacher=str(tmp_path / "wide")), tmp_path / "wide-out")
    full = run_finetune(lm_dir, settings(corpus_file, mode="full", teacher=str(lm_dir), steps=1), tmp_path / "same")
    assert full.loss_curve[0][1] == pytest.approx(0.0, abs=1e-6)  # a model distilled from itself: KL 0


def test_a_folder_whose_dense_model_moved_needs_a_teacher(compressed_dir: Path, lm_dir: Path, corpus_file: Path,
                                                         tmp_path: Path) -> None:
    moved = tmp_path / "moved-dense"
    lm_dir.rename(moved)
    with pytest.raises(wc.WeLoreError, match="is not there with the weights the folder records; pass --teacher"):
        run_finetune(compressed_dir, settings(corpus_file), tmp_path / "out")
    result = run_finetune(compressed_dir, settings(corpus_file, teacher=str(moved), steps=1), tmp_path / "out")
    assert result.loss_curve[0][1] > 0


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "x"], "teacher, temperature and alpha set how a run distils: they need distill (--distill)"),
    (["--distill", "--alpha", "1"], "alpha is the LM loss's share beside distillation, in [0, 1), got 1.0"),
    (["--distill", "--temperature", "0"], "temperature must be a positive number, got 0.0"),
])
def test_bad_distillation_settings_are_one_line(argv: list[str], message: str, compressed_dir: Path,
                                                corpus_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "finetune", str(compressed_dir), "--data", str(corpus_file), *argv,
                       "-o", str(tmp_path / "out"))
    assert code == 2 and one_line(err) == message
