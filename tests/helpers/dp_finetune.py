"""Run under `accelerate launch --num_processes 2 --cpu`: one LRC fine-tune, each rank saving the weights it
ends with (tests/test_data_parallel.py compares the ranks, and them with one process at twice the batch).

    dp_finetune.py MODEL DATA OUT CACHE [TEACHER]    (with TEACHER: distil from it)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def main(model: str, data: str, out: str, cache: str, teacher: str = "") -> None:
    os.environ["WELORE_CACHE"] = cache
    import welore_core as wc
    from welore_core.finetune.loop import Session

    torch.set_num_threads(1)
    final = Session.final_model

    def keep(self: Session) -> torch.nn.Module:  # every rank writes what it trained, before any saving
        trained = final(self)
        rank = self.accelerator.process_index
        torch.save({k: v.detach().clone() for k, v in trained.state_dict().items()}, Path(out) / f"rank{rank}.pt")
        return trained

    Session.final_model = keep  # type: ignore[method-assign]
    config = wc.FinetuneConfig(mode="lrc", data=data, steps=4, seqlen=32, batch_size=2, lr=1e-2, eval_tokens=256,
                               forget_tokens=0, save_every=0, device="cpu", optimizer="loop", distill=bool(teacher),
                               teacher=teacher)
    wc.run_finetune(model, config, Path(out) / "model")


if __name__ == "__main__":
    main(*sys.argv[1:6])
