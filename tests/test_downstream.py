"""Downstream tasks: the shared files' readers and splits, prompts, answer-only targets, exact-match accuracy,
and fine-tuning on a task until a tiny model answers it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CHARS, tiny_llama

from welore_core.data import downstream as ds
from welore_core.utils import data_dir

SHARED = data_dir() / "downstream"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def fused_char_tokenizer():  # type: ignore[no-untyped-def]
    """conftest's character tokenizer, decoding without spaces between characters (so answers read as words)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(CHARS[:63])}
    vocab["[UNK]"] = 63
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared downstream data not present")
@pytest.mark.parametrize("name, n_train, n_eval, answers", [
    ("coin_flip", 350, 150, {"yes", "no"}),
    ("strategyqa", 1603, 687, {"yes", "no"}),
    ("boolq", 2289, 981, {"True", "False"}),  # the shared folder has only the dev file: 70 / 30 of it
    ("commonsenseqa", 9741, 1221, set("ABCDE")),
])
def test_shared_task_files_split_as_in_the_paper(name: str, n_train: int, n_eval: int, answers: set[str]) -> None:
    train, evals = ds.load_task(name, "train"), ds.load_task(name, "eval")
    assert (len(train), len(evals)) == (n_train, n_eval)
    assert {e.answer for e in train + evals} == answers
    assert all(e.context for e in train[:20]) == (name == "boolq")


def test_prompt_ends_with_the_trigger_and_only_the_answer_is_a_target() -> None:
    task = ds.TASKS["coin_flip"]
    example = ds.Example("A coin is heads up. Bo flips the coin. Is the coin still heads up?", "no")
    prompt = ds.prompt_text(task, example)
    assert prompt.startswith(ds.BLURB) and "Question: A coin is heads up." in prompt
    assert prompt.endswith("### Response:\nThe answer is")
    tok = fused_char_tokenizer()
    (ids, labels), = ds.encode(tok, task, [example], seqlen=64)
    target = tok(ds.target_text(example), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(labels) == 64  # the prompt lost its start, the answer is whole
    assert labels[-len(target):] == target and set(labels[: -len(target)]) == {ds.IGNORE}
    assert tok.decode(ids[-len(target):]).startswith(" no.")


@pytest.mark.parametrize("name, text, expected", [
    ("coin_flip", " Yes. The coin", "yes"), ("strategyqa", " no, because", "no"), ("boolq", " false.", "False"),
    ("commonsenseqa", " (C) mall", "C"), ("svamp", " 51.0 dollars", "51"), ("coin_flip", " maybe", None),
])
def test_answers_are_parsed_like_the_gold_labels(name: str, text: str, expected: str | None) -> None:
    assert ds.parse_answer(ds.TASKS[name], text) == expected


def test_batched_greedy_answers_equal_one_by_one() -> None:
    model, tok, task = tiny_llama(), fused_char_tokenizer(), ds.TASKS["coin_flip"]
    examples = [ds.Example(f"Is {w} up?", "yes") for w in ("it", "the cat", "a much longer thing")]
    batched = ds.accuracy(model, tok, task, examples, seqlen=64, batch_size=3)
    single = ds.accuracy(model, tok, task, examples, seqlen=64, batch_size=1)
    assert [p["generated"] for p in batched["predictions"]] == [p["generated"] for p in single["predictions"]]
    assert batched["total"] == 3 and 0 <= batched["accuracy"] <= 1


def test_finetuning_on_a_task_teaches_a_tiny_model_its_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer is "yes": before training the random model never says it, after a short run it always does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from welore_core.finetune import FinetuneConfig, run_finetune

    names = ["bo", "al", "cy", "di", "ed", "flo", "gus"]
    rows = [{"question": f"A coin is heads up. {a} flips it. {b} flips it. Is it up?", "answer": "yes"}
            for a in names for b in names]
    (tmp_path / "downstream" / "coin_flip").mkdir(parents=True)
    (tmp_path / "downstream" / "coin_flip" / "coin_flip.json").write_text(json.dumps({"examples": rows}))
    monkeypatch.setenv("WELORE_DATA", str(tmp_path))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    fused_char_tokenizer().save_pretrained(tmp_path / "lm")
    settings = FinetuneConfig(mode="full", task="coin_flip", steps=40, seqlen=80, batch_size=8, lr=1e-2,
                              forget_tokens=0, eval_examples=12, save_every=0)
    result = run_finetune(tmp_path / "lm", settings, tmp_path / "out")
    assert result.accuracy_before == 0.0 and result.accuracy_after == 1.0
    assert result.heldout_ppl_after < result.heldout_ppl_before
    assert result.data == "task:coin_flip" and result.after["examples"] == 12
