"""What a fine-tuning run reports: one typed result, written beside the output weights (`welore-finetune.json`),
recorded in the run registry and printed by `welore finetune --json` (with `cached` last)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class FinetuneResult:
    mode: str
    model: str  # label of the input model
    input: str  # its folder
    output: str  # the trained model's folder
    data: str  # the text spec, or task:<name>
    steps: int
    steps_this_run: int  # steps trained by this call (a resumed run trains the rest)
    resumed_from: int  # the step this call started at
    trainable_params: int  # lora: the adapters
    total_params: int
    trainable_fraction: float
    final_loss: float | None
    loss_curve: list[list[float]]  # [step, loss] after every optimizer step
    heldout_ppl_before: float | None  # text: the held-out tail; task: the answers of the eval examples
    heldout_ppl_after: float | None
    wikitext_ppl_before: float | None  # forgetting: WikiText-2 test perplexity (None when skipped)
    wikitext_ppl_after: float | None
    accuracy_before: float | None  # downstream tasks: exact-match accuracy
    accuracy_after: float | None
    peak_memory_mib: float | None  # CUDA max allocated, or peak RSS on the CPU, over the training loop
    peak_memory_kind: str
    peak_rss_mib: float | None
    state_bytes: dict[str, int]  # params, grads, optimizer, total: exact bytes of the training state
    state_mib: float | None
    tokens: int  # over every session of a resumed run
    train_seconds: float
    tokens_per_s: float | None
    session_tokens: int  # this call alone
    session_seconds: float
    step_seconds: list[float]
    device: str
    processes: int
    compressed: bool  # the model was (or was made) a compressed folder with LRCs
    before: dict[str, Any]  # every measurement before training
    after: dict[str, Any]
    config: dict[str, Any]  # the FinetuneConfig as a dict
    key: str  # the run's registry key
    cached: bool = False  # True when the finished output folder answered the call

    def record(self) -> dict[str, Any]:
        """The stored form (output folder, registry): everything but `cached`."""
        out = asdict(self)
        out.pop("cached")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any], cached: bool = False) -> "FinetuneResult":
        known = {f.name for f in fields(cls)} - {"cached"}
        return cls(**{k: v for k, v in record.items() if k in known}, cached=cached)

    def summary(self) -> dict[str, Any]:
        """The result without the per-step and per-measurement details (for a table of several runs)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("before", "after", "config")}
