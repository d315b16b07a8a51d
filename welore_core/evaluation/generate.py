"""Reading what a compressed model writes: greedy continuations of one prompt, streamed token by token, for
the compressed model and its dense source side by side (`welore generate`, the dashboard's Generate panel).

Greedy decoding (no sampling) so that the two continuations differ only because the weights do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import WeLoreError
from ..models import ModelSource, load_model, load_tokenizer
from ..utils import Progress

MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class Continuation:
    model: str  # the model's label
    prompt: str
    text: str  # the generated continuation, without the prompt
    tokens: int  # tokens generated
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def positions(model: nn.Module) -> int | None:
    """How many positions the model has (None: not limited by its config)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt(prompt: str, ids: list[int], model: nn.Module, max_new_tokens: int) -> None:
    if not prompt.strip():
        raise WeLoreError("the prompt is empty: give the text to continue")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise WeLoreError(f"max new tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens}")
    limit = positions(model)
    if limit is not None and len(ids) >= limit:
        raise WeLoreError(f"the prompt is {len(ids)} tokens; the model has {limit} positions: shorten it")


class _Stream:
    """transformers' streamer protocol (put / end): each new token's text to `on_text` as it is decoded."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None], progress: Progress | None, total: int) -> None:
        self.tokenizer, self.on_text, self.progress, self.total = tokenizer, on_text, progress, total
        self.ids: list[int] = []
        self.shown = ""
        self.first = True

    def put(self, value: torch.Tensor) -> None:
        if self.first:  # the prompt comes first
            self.first = False
            return
        self.ids += [int(t) for t in value.reshape(-1).tolist()]
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.shown) and not text.endswith("\ufffd"):  # half a multi-byte character waits
            self.on_text(text[len(self.shown):])
            self.shown = text
        if self.progress:
            self.progress(len(self.ids), self.total, f"{len(self.ids)} tokens")

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.shown) and len(text) > len(self.shown):
            self.on_text(text[len(self.shown):])
            self.shown = text


def generate(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 64, label: str = "",
             on_text: Callable[[str], None] | None = None, progress: Progress | None = None) -> Continuation:
    """The greedy continuation of `prompt` (at most `max_new_tokens`, ending early at the end-of-text token), each
    piece of text passed to `on_text` as it is generated."""
    import time

    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    check_prompt(prompt, ids[0].tolist(), model, max_new_tokens)
    limit = positions(model)
    budget = max_new_tokens if limit is None else min(max_new_tokens, limit - ids.shape[1])
    device = next(model.parameters()).device
    stream = _Stream(tokenizer, on_text or (lambda _: None), progress, budget)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = time.perf_counter()
    model.eval()
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                             max_new_tokens=budget, do_sample=False, num_beams=1, streamer=stream, pad_token_id=pad,
                             temperature=None, top_p=None, top_k=None)
    new = out[0, ids.shape[1]:].tolist()
    return Continuation(label, prompt, tokenizer.decode(new, skip_special_tokens=True), len(new),
                        time.perf_counter() - start)


def generate_from(source: ModelSource, prompt: str, max_new_tokens: int = 64, device: Any = "cpu",
                  dtype: Any = "float32", on_text: Callable[[str], None] | None = None,
                  progress: Progress | None = None) -> Continuation:
    """`generate` on a model source (a compressed folder or any model), loaded on `device` in `dtype`."""
    if not prompt.strip():
        raise WeLoreError("the prompt is empty: give the text to continue")
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype, device)
    return generate(model, tokenizer, prompt, max_new_tokens, source.label, on_text, progress)


def side_by_side(spec: str | None, prompt: str, max_new_tokens: int = 64, compare: str | None = "",
                 device: Any = "cpu", dtype: Any = "float32", progress: Progress | None = None) -> dict[str, Any]:
    """The greedy continuations of `prompt` by `spec` and by its dense source (`compare`: "" = the dense model a
    compressed folder was made from, None = none), one after the other with one progress bar over both; `device`
    and `dtype` as a config names them ("auto" resolved)."""
    from ..models import dense_source, placement, resolve_model

    device, dtype = placement(str(device), str(dtype).removeprefix("torch."), "generation")
    if not prompt.strip():
        raise WeLoreError("the prompt is empty: give the text to continue")
    source = resolve_model(spec)
    runs = [(source, "compressed" if source.kind == "compressed" else "model")]
    if compare is not None:
        if not compare and source.kind != "compressed":
            raise WeLoreError(f"{source.path} is not a compressed folder: name the model to compare it with")
        runs.append((resolve_model(compare) if compare else dense_source(source, "name the model to compare it with"),
                     "dense"))
    out = []
    for i, (model, role) in enumerate(runs):
        def step(done: int, total: int, message: str, i: int = i, role: str = role) -> None:
            if progress:
                progress(i * max_new_tokens + done, len(runs) * max_new_tokens, f"{role}: {message}")

        c = generate_from(model, prompt, max_new_tokens, device, dtype, progress=step)
        out.append({"role": role, "model": c.model, "path": str(model.path), "text": c.text, "tokens": c.tokens,
                    "seconds": round(c.seconds, 3)})
    return {"prompt": prompt, "continuations": out}
