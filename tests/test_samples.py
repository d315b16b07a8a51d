"""Text the model writes itself (`welore sample`, welore_core/evaluation/samples.py): seeded per batch, resumable to the
same text, sampling from the model's own distribution, and usable as calibration data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import char_tokenizer, one_line, run, tiny_llama

from welore_core.evaluation import SampleConfig, sample_batch, write_samples
from welore_core.evaluation.samples import SEPARATOR, start_token
from welore_core.errors import WeLoreError


def _tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import decoders

    tok = char_tokenizer()
    tok.backend_tokenizer.decoder = decoders.Fuse()  # characters back to text without spaces between them
    tok.bos_token = "\n"  # documents start from a beginning-of-text token; the char tokenizer has none of its own
    return tok


@pytest.fixture
def sampled_dir(lm_dir: Path) -> Path:
    _tokenizer().save_pretrained(lm_dir)  # the tiny folder's tokenizer, given a start token
    return lm_dir


CONFIG = SampleConfig(sequences=5, tokens=7, batch_size=2, seed=3)


def test_samples_are_seeded_per_batch_and_every_batch_is_written(tmp_path: Path) -> None:
    model, tok = tiny_llama(), _tokenizer()
    first = write_samples(model, tok, CONFIG, tmp_path / "a.txt").read_text()
    again = write_samples(model, tok, CONFIG, tmp_path / "b.txt").read_text()
    other = write_samples(model, tok, SampleConfig(sequences=5, tokens=7, batch_size=2, seed=4), tmp_path / "c.txt")
    assert first == again  # the same seed, the same text
    assert first != other.read_text()
    batches = [sample_batch(model, tok, CONFIG, i) for i in (2, 0, 1)]  # any order: each batch has its own seed
    assert [len(b) for b in batches] == [1, 2, 2]  # 5 documents in batches of 2: the last is short
    assert first == SEPARATOR.join(batches[1] + batches[2] + batches[0]) + "\n"
    assert not (tmp_path / "a.txt.partial.jsonl").exists()


def test_every_document_is_as_long_as_asked_even_past_the_end_of_text_token() -> None:
    model, tok = tiny_llama(), _tokenizer()
    tok.eos_token = "a"  # a token the random model often emits: it must not end a document early
    docs = sample_batch(model, tok, SampleConfig(sequences=4, tokens=9, batch_size=4), 0)
    assert [len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs] == [9] * 4


def test_a_vanishing_top_p_samples_the_greedy_continuation() -> None:
    """top_p → 0 keeps only the most likely token: sampling becomes greedy decoding from the start token."""
    model, tok = tiny_llama(), _tokenizer()
    docs = sample_batch(model, tok, SampleConfig(sequences=2, tokens=8, batch_size=2, top_p=1e-9), 0)
    start = torch.full((1, 1), start_token(tok))
    greedy = model.generate(input_ids=start, attention_mask=torch.ones_like(start), do_sample=False,
                            max_new_tokens=8, min_new_tokens=8, pad_token_id=start_token(tok))
    expected = tok.decode(greedy[0, 1:].tolist())
    assert docs == [expected, expected]


def test_temperature_follows_the_models_distribution() -> None:
    """At temperature 1 the first sampled token is distributed as the model's softmax after the start token
    (a chi-square-free check: the empirical frequency of the likeliest token within 4 standard errors)."""
    model, tok = tiny_llama(), _tokenizer()
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[start_token(tok)]])).logits[0, -1], -1)
    top, p = int(probs.argmax()), float(probs.max())
    n = 400
    docs = sample_batch(model, tok, SampleConfig(sequences=n, tokens=1, batch_size=n), 0)
    freq = sum(d == tok.decode([top]) for d in docs) / n
    assert abs(freq - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_an_interrupted_run_resumes_to_the_same_text(tmp_path: Path) -> None:
    model, tok = tiny_llama(), _tokenizer()
    whole = write_samples(model, tok, CONFIG, tmp_path / "whole.txt").read_text()
    out = tmp_path / "resumed.txt"

    def stop_after_one(done: int, total: int, message: str) -> None:
        if done >= 2:  # the first batch is written; the second is about to start
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_samples(model, tok, CONFIG, out, "id", progress=stop_after_one)
    partial = tmp_path / "resumed.txt.partial.jsonl"
    assert not out.exists() and len(partial.read_text().splitlines()) == 2  # the header and batch 0
    with open(partial, "a") as fh:
        fh.write('{"batch": 1, "documents": ["torn')  # a line cut short by the kill: dropped and redone
    seen: list[str] = []
    assert write_samples(model, tok, CONFIG, out, "id", progress=lambda d, t, m: seen.append(m)).read_text() == whole
    assert seen[0] == "batch 2/3" and not partial.exists()


def test_a_partial_run_of_other_settings_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "s.txt"
    (tmp_path / "s.txt.partial.jsonl").write_text(json.dumps({"welore_samples": 1, "model": "other"}) + "\n")
    with pytest.raises(WeLoreError, match=r"s\.txt\.partial\.jsonl: an unfinished sampling run with other settings"):
        write_samples(tiny_llama(), _tokenizer(), CONFIG, out, "id")
    assert not out.exists()


def test_bad_settings_and_models_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(WeLoreError, match="sample sequences must be at least 1, got 0"):
        SampleConfig(sequences=0)
    with pytest.raises(WeLoreError, match="sample temperature must be above 0"):
        SampleConfig(temperature=0)
    with pytest.raises(WeLoreError, match=r"sample top_p must be in \(0, 1\], got 1.5"):
        SampleConfig(top_p=1.5)
    with pytest.raises(WeLoreError, match="sample tokens 64: the model has 64 positions; use at most 63"):
        sample_batch(tiny_llama(), _tokenizer(), SampleConfig(tokens=64), 0)
    with pytest.raises(WeLoreError, match="neither a beginning- nor an end-of-text token"):
        sample_batch(tiny_llama(), char_tokenizer(), CONFIG, 0)


@pytest.mark.slow
def test_cli_samples_into_the_cache_reuses_and_calibrates_a_compression(sampled_dir: Path, tmp_path: Path,
                                                                         isolated_cache: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = ("sample", str(sampled_dir), "--sequences", "6", "--tokens", "20", "--batch-size", "4", "--json")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    first = json.loads(out.splitlines()[-1])
    path = Path(first["path"])
    assert path.parent == isolated_cache / "samples" and path.name.startswith("tiny-lm-")
    assert (first["documents"], first["tokens"], first["reused"]) == (6, 120, False)
    code, out, _ = run(capsys, *args)
    assert json.loads(out.splitlines()[-1])["reused"] is True
    code, out, err = run(capsys, "sample", str(sampled_dir), "--sequences", "6", "--tokens", "20", "--batch-size",
                         "4", "-o", str(tmp_path / "mine.txt"))
    assert code == 0 and (tmp_path / "mine.txt").read_text() == path.read_text()  # same settings, same text
    assert "pass it as --calib" in out
    code, out, err = run(capsys, "compress", str(sampled_dir), "--err", "50", "--act-svd", "--calib", str(path),
                         "--calib-samples", "4", "--calib-seqlen", "16", "-o", str(tmp_path / "c"), "--json")
    assert code == 0, err
    manifest = json.loads((tmp_path / "c" / "welore-manifest.json").read_text())
    assert manifest["calibration"] == {"data": str(path), "samples": 4, "seqlen": 16, "seed": 0}  # provenance
    assert f"| calibration | {path} (4 windows × 16 tokens) |" in (tmp_path / "c" / "README.md").read_text()

    code, _, err = run(capsys, "sample", str(sampled_dir), "--sequences", "0")
    assert code == 2 and one_line(err) == "sample sequences must be at least 1, got 0"
    code, _, err = run(capsys, "sample", str(sampled_dir), "--tokens", "100")
    assert code == 2 and "the model has 64 positions; use at most 63" in one_line(err)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # a refusal leaves nothing behind
    code, _, err = run(capsys, "sample", str(sampled_dir), "-o", str(sampled_dir / "x.txt"))
    assert code == 2 and "nothing is written into a source model" in one_line(err)
