"""Tiny seeded models built in the tests (no downloads) and an isolated cache folder per test."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("WELORE_CACHE", str(cache))
    return cache


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Training tests on tiny matrices: one thread is faster, steady on a shared machine, and bit-identical
    across runs (resume tests compare exact tensors). Modules opt in with usefixtures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_llama(layers: int = 3, seed: int = 0, bias: bool = False, tie: bool = False) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attention_bias=bias, tie_word_embeddings=tie)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(layers: int = 2, seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=layers, n_head=4)).eval()


def tiny_neox(layers: int = 2, seed: int = 0) -> torch.nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, max_position_embeddings=64)
    return GPTNeoXForCausalLM(config).eval()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`welore ARGV` in this process: (exit status, stdout, stderr) of the command alone."""
    from welore_core.cli import main

    capsys.readouterr()  # what the test itself printed (transformers saving a model) is not the command's output
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The message of the CLI's one-line error (asserting it is exactly one `welore: error:` line)."""
    assert err.startswith("welore: error: ") and err.count("\n") == 1, err
    return err.removeprefix("welore: error: ").strip()


@pytest.fixture
def llama() -> torch.nn.Module:
    return tiny_llama()


@pytest.fixture
def llama_dir(tmp_path: Path, llama: torch.nn.Module) -> Path:
    folder = tmp_path / "tiny-llama"
    llama.save_pretrained(folder)
    return folder


CHARS = "abcdefghijklmnopqrstuvwxyz .,;:!?'\n-ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def char_tokenizer():  # type: ignore[no-untyped-def]
    """A 64-symbol character tokenizer (no download): one id per character, [UNK] for the rest."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(CHARS[:63])}
    vocab["[UNK]"] = 63
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    import random

    rng = random.Random(0)
    words = ["the", "king", "speaks", "and", "queen", "answers", "to", "a", "lord", "of", "york", "now", "then"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(400))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return path


@pytest.fixture
def lm_dir(tmp_path: Path) -> Path:
    """A tiny LLaMA folder with a tokenizer: what `welore eval` and `welore compress` need."""
    folder = tmp_path / "tiny-lm"
    tiny_llama().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder
