"""Sharded fine-tuning (FSDP2): each process holds 1/N of the parameters, gradients and optimizer state.

`welore finetune --fsdp` under a launcher (`torchrun --nproc_per_node N` or `accelerate launch --num_processes N`,
with a plain multi-process config, not accelerate's own FSDP plugin) wraps every decoder block, then the root, with
`torch.distributed.fsdp.fully_shard`. The same code runs on GPUs (NCCL) and on the CPU (gloo), so the CPU tests
exercise the path GPUs take. What changes against data parallelism:

- storage: every floating parameter is kept sharded in float32 (the masters); under bf16 mixed precision (bf16
  weights, or `mixed_precision bf16`) FSDP gathers them in bf16 for compute and reduces gradients in float32
  (`MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=float32)`): the matrices multiply in bf16, the loss
  (transformers upcasts the logits) and the reductions run in float32;
- frozen and trainable parameters share a block's group (lrc: frozen N-LRCs beside trainable factors); only the
  trainable ones get gradients and optimizer state;
- checkpoints are `torch.distributed.checkpoint` folders (`sharded/`): each process writes and reads its own
  shards of the model and optimizer, and its RNG state; a run resumes bit-identically on the same process count;
- the final model is gathered to the main process (on the CPU) and written as the same loadable folder as today.

Refused in one line: no launcher (one process has nothing to shard with), galore (its projections need each
gradient whole; a shard's SVD is another projection), and fp16 mixed precision (needs a sharded gradient scaler).
A distillation teacher is not sharded: every process holds a whole copy of it.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeLoreError
from ..models import find_blocks
from .config import FinetuneConfig

SHARDS = "sharded"  # a sharded checkpoint's torch.distributed.checkpoint folder


def launched() -> bool:
    """Whether this process was started by a launcher that sets up a process group (torchrun, accelerate launch)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def check_sharding(config: FinetuneConfig) -> None:
    """The refusals that need the environment (the config checks its own fields)."""
    if not config.fsdp:
        return
    if not launched():
        raise WeLoreError("--fsdp shards the model across processes, and this is a single process without a launcher: "
                          "start it with `torchrun --standalone --nproc_per_node N -m welore_core finetune ... --fsdp` or "
                          "`accelerate launch --num_processes N -m welore_core finetune ... --fsdp`")


def is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (the tensor itself otherwise)."""
    return tensor.to_local() if is_sharded(tensor) else tensor  # type: ignore[attr-defined]


def skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters are on the meta device (no memory), ties kept, buffers copied: what the
    gathered state dict is assigned into at the end of a sharded run."""
    memo: dict[int, Any] = {}
    for p in model.parameters():  # deepcopy consults the memo by id: every parameter (and its ties) becomes meta
        if id(p) not in memo:
            memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


def shard_model(model: nn.Module, config: FinetuneConfig, device: torch.device) -> nn.Module:
    """Wrap every decoder block, then the root, with `fully_shard` on a 1-D mesh over all processes (in place)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()  # the sharded masters; FSDP gathers them in `compute`
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if config.precision() == "bf16" else None,
                                  reduce_dtype=torch.float32)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    _, blocks = find_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def clip_grad_norm(parameters: list[torch.Tensor], max_norm: float) -> float:
    """The total gradient norm over every shard of every process (clipped to `max_norm` when finite)."""
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = get_total_norm(grads)
    if is_sharded(total):
        total = total.full_tensor()  # type: ignore[attr-defined]
    if math.isfinite(max_norm):
        clip_grads_with_norm_([p for p in parameters if p.grad is not None], max_norm, total)
    return float(total)


def gathered(model: nn.Module, frame: nn.Module, main: bool) -> nn.Module | None:
    """The sharded `model`'s weights, whole, on the CPU of the main process, assigned into `frame` (its skeleton);
    every process must call it (a collective); None on the others."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        return None
    frame.load_state_dict(full, assign=True)
    base = getattr(frame, "get_base_model", lambda: frame)()  # peft: the transformers model inside
    if hasattr(base, "tie_weights"):
        base.tie_weights()  # assign broke the tie into two equal tensors
    return frame


def save_shards(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> None:
    """Every process writes its shards of the model and optimizer, and its RNG state, into `folder` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDS))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, folder / f"rng-{rank}.pt")


def load_shards(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> None:
    """Restore what `save_shards` wrote, each process its own shards (resharded by DCP if the layout moved)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (folder / SHARDS).is_dir():
        raise WeLoreError(f"{folder} holds no sharded state ({SHARDS}/): it was written by a run without --fsdp; "
                          "resume it without --fsdp, or delete it")
    model_state, optim_state = get_state_dict(model, optimizer)
    try:
        dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDS))
    except Exception as err:  # a truncated or foreign checkpoint: say which, in one line
        raise WeLoreError(f"{folder / SHARDS}: unreadable sharded checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
    rng = torch.load(folder / f"rng-{rank}.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def fresh(folder: Path) -> None:
    """An empty `folder` (what an interrupted save left there is removed)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
