"""Data: one loader for every text corpus (WikiText-2, C4, tiny-shakespeare, hub datasets, files), token
ids (pretrained tokenizers cached, local byte/char tokenizers), windows (evaluation windows, the one seeded
sampler, held-out splits) and the paper's downstream tasks."""
from __future__ import annotations

from .corpus import DATASETS, HUB_PREFIX, Corpus, check_corpus, load_corpus, local_path
from .downstream import TASKS, Example, Task, get_task, load_task
from .tokens import LOCAL_TOKENIZERS, Tokens, tokenize, tokenize_corpus, tokenizer_key
from .windows import TextSplit, sample_windows, split_probe, split_text, windows_of

__all__ = ["DATASETS", "HUB_PREFIX", "LOCAL_TOKENIZERS", "TASKS", "Corpus", "Example", "Task", "TextSplit", "Tokens",
           "check_corpus", "get_task", "load_corpus", "load_task", "local_path", "sample_windows", "split_probe",
           "split_text", "tokenize", "tokenize_corpus", "tokenizer_key", "windows_of"]
