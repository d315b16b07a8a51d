"""Run under `torchrun --nproc_per_node 2` (gloo, CPU): sharded (--fsdp) fine-tunes of a tiny compressed model, one
per mode, each process recording how much of the model and optimizer state it holds (tests/test_fsdp.py).

    fsdp_finetune.py MODEL DATA OUT CACHE MODES [KILL_AT]

MODES: comma-separated; each run writes OUT/<mode>/ and OUT/<mode>-rank<r>.json. KILL_AT: every process exits
hard (no cleanup, like a killed job) after that step; the checkpoint before it stays.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def main(model: str, data: str, out: str, cache: str, modes: str, kill_at: str = "0") -> None:
    os.environ["WELORE_CACHE"] = cache
    import welore_core as wc
    from welore_core.finetune.loop import Session
    from welore_core.finetune.modes import optimizer_tensors
    from welore_core.finetune.sharded import local

    torch.set_num_threads(1)
    train = Session.train
    rank = int(os.environ["RANK"])

    def counted(self: Session, batches, say):  # type: ignore[no-untyped-def]
        stats = train(self, batches, say)
        params = list(self.model.parameters())
        held = {"params_local": sum(local(p).numel() for p in params),
                "params_global": sum(p.numel() for p in params),
                "trainable_global": sum(p.numel() for p in self.prepared.trainable.values()),
                "optimizer_local": sum(local(t).numel() for t in optimizer_tensors(self.optimizer) if t.dim() > 0),
                "sharded": all(type(p).__name__ == "DTensor" for p in params),
                "state_bytes": stats.state_bytes}
        Path(out, f"{self.config.mode}-rank{rank}.json").write_text(json.dumps(held))
        return stats

    Session.train = counted  # type: ignore[method-assign]

    def progress(step: int, steps: int, message: str) -> None:
        if int(kill_at) and step == int(kill_at):
            os._exit(3)

    for mode in modes.split(","):
        config = wc.FinetuneConfig(mode=mode, data=data, steps=4, seqlen=32, batch_size=2, lr=1e-2, eval_tokens=256,
                                   forget_tokens=0, save_every=2, device="cpu", optimizer="loop", fsdp=True)
        wc.run_finetune(model, config, Path(out) / mode, progress)


if __name__ == "__main__":
    main(*sys.argv[1:7])
