"""Perplexity: equals a direct computation of the same windows; budgets, data sources and bad inputs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import char_tokenizer, tiny_llama

from welore_core import WeLoreError
from welore_core.data import load_corpus, tokenize_corpus, windows_of
from welore_core.evaluation import EvalConfig, perplexity


def test_perplexity_equals_a_direct_computation_of_the_same_windows() -> None:
    model = tiny_llama()
    ids = np.random.default_rng(0).integers(0, 64, 1000)
    result = perplexity(model, ids, EvalConfig(seqlen=64, batch_size=3))
    windows = torch.as_tensor(ids[: 15 * 64]).view(15, 64)
    nlls = []
    with torch.no_grad():
        for w in windows:
            logits = model(w[None]).logits[0]
            nlls.append(F.cross_entropy(logits[:-1], w[1:], reduction="mean").item())
    assert result.windows == 15 and result.tokens == 960 and result.seqlen == 64
    assert result.nll == pytest.approx(float(np.mean(nlls)), rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(np.mean(nlls)), rel=1e-5)
    assert result.tokens_per_s == pytest.approx(result.tokens / result.seconds)


def test_batch_size_does_not_change_the_result() -> None:
    model = tiny_llama()
    ids = np.random.default_rng(1).integers(0, 64, 700)
    one = perplexity(model, ids, EvalConfig(seqlen=50, batch_size=1))
    many = perplexity(model, ids, EvalConfig(seqlen=50, batch_size=8))
    assert one.nll == pytest.approx(many.nll, rel=1e-6)


def test_token_budget_takes_whole_windows_from_the_start() -> None:
    ids = np.arange(1000)
    w = windows_of(ids, 100, 350)
    assert w.shape == (3, 100) and int(w[0, 0]) == 0 and int(w[-1, -1]) == 299
    with pytest.raises(WeLoreError, match="fewer than one window"):
        windows_of(np.arange(50), 100)


@pytest.mark.parametrize("kwargs, message", [({"seqlen": 1}, "seqlen"), ({"tokens": 0}, "token budget must be positive"),
                                             ({"batch_size": 0}, "batch_size")])
def test_bad_eval_config(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(WeLoreError, match=message):
        EvalConfig(**kwargs)  # type: ignore[arg-type]


def test_a_budget_under_one_window_is_refused_when_scoring() -> None:
    config = EvalConfig(seqlen=64, tokens=10)  # valid alone: the model's positions are checked first
    with pytest.raises(WeLoreError, match="token budget 10 is smaller than one window of seqlen 64"):
        perplexity(tiny_llama(), np.arange(1000) % 64, config)


def test_corpora_local_wikitext_files_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_text(" = Robert Boulter = \n text")
    monkeypatch.setenv("WELORE_DATA", str(tmp_path))
    corpus = load_corpus("wikitext2")
    assert corpus.text.startswith(" = Robert Boulter =") and len(corpus.digest) == 64
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(WeLoreError, match="the text is empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    with pytest.raises(WeLoreError, match="no such file, and not one of"):
        load_corpus("wikitext103")


@pytest.mark.slow
def test_hub_corpora_offline_fail_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeLoreError, match="could not load it from the hub"):
        load_corpus("c4")


def test_tokenised_corpus_is_cached(corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = char_tokenizer()
    corpus = load_corpus(str(corpus_file))
    ids = tokenize_corpus(tokenizer, corpus)
    assert ids.dtype == np.int32 and ids.size == len(corpus.text)  # one token per character

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenised twice")

    monkeypatch.setattr(type(tokenizer), "__call__", refuse)
    np.testing.assert_array_equal(tokenize_corpus(tokenizer, corpus), ids)


def test_shared_wikitext_copy_is_found_by_default() -> None:
    corpus = load_corpus("wikitext2")  # ../shared/data/wikitext-2-raw/wiki.test.raw
    assert corpus.text.startswith(" \n = Robert Boulter = ") or " = Robert Boulter = " in corpus.text[:40]
