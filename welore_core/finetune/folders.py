"""Where a fine-tuning run keeps its model: the output folder, resumable checkpoints, and stored dtypes.

A model is written in the layout it came in: a compressed folder (`compression.save_compressed`, LRC
factors as `<layer>.A.weight` / `<layer>.B.weight`) or a plain transformers folder, with the tensor
dtypes of the input. Checkpoints live in `<checkpoints>/step-NNNNNN/`:

    model/             the model at that step (LoRA merged), loadable like any model folder
    adapter.safetensors   lora mode: the adapter tensors (the run resumes from base/ + these)
    training.pt        optimizer, scheduler and RNG state (tensors and plain values only)
    state.json         run key, step, loss curve, metrics before training, tokens and seconds so far

A sharded run (`--fsdp`, `sharded`) writes instead of model/ and the optimizer's part of training.pt:

    sharded/           torch.distributed.checkpoint: every process's shards of the model and optimizer
    rng-<rank>.pt      each process's RNG state

A step folder is built under a temporary name and renamed into place, then `latest` is rewritten
atomically: a crash leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..compression.apply import CompressionReport, is_compressed_folder, save_compressed
from ..errors import WeLoreError
from ..models import FINETUNE_RECORD, ModelSource, unique_parameters
from ..utils import atomic_folder, atomic_write_text
from ..utils import check_output as check_path

RECORD = FINETUNE_RECORD  # beside the weights of a fine-tuned output folder: the run's result
LORA_BASE = ".welore-lora-base"  # the frozen base a resumed lora run starts from (a name no user folder has)
LATEST = "latest"


@dataclass
class Layout:
    """How to write a model back like its input: compressed (rank map + report) or plain, and in which dtypes."""

    source: ModelSource  # the input the run started from (tokenizer files, refusal to overwrite it)
    tokenizer: Any
    report: CompressionReport | None  # the compression (and its rank map); None = a plain transformers folder
    dtypes: dict[str, torch.dtype]  # stored dtype of each input tensor, by name
    default_dtype: torch.dtype  # for tensors the input did not have (factors of a compressed-first model)

    @property
    def compressed(self) -> bool:
        return self.report is not None


def cast_like_input(model: nn.Module, layout: Layout) -> None:
    """Round every floating parameter through the dtype it will be stored in, in place (kept in its training
    dtype): what is evaluated afterwards is exactly what the output folder holds."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point():
                stored = layout.dtypes.get(name, layout.default_dtype)
                p.copy_(p.to(stored).to(p.dtype))


def _stored_copy(model: nn.Module, layout: Layout) -> None:
    for name, p in model.named_parameters():
        if p.is_floating_point():
            p.data = p.data.to(layout.dtypes.get(name, layout.default_dtype))


def check_output(output: Path, source: ModelSource, what: str = "output") -> None:
    """Refuse an output that is the input or inside it, an existing folder this project did not write, or a
    place nothing can be created in."""
    check_path(output, folder=True, protected=source.protected(), what=what)
    if output.exists() and not (output.is_dir() and (is_compressed_folder(output) or (output / RECORD).is_file())):
        raise WeLoreError(f"{what} {output} exists and is not a model folder written by welore; choose a new path")


def save_model(model: nn.Module, folder: Path, layout: Layout, stored: bool = False, replace: bool = False) -> Path:
    """Write `model` as a folder like the input's (atomic). With `stored`, cast in place to the input's dtypes
    first (the end of a run); checkpoints keep the training dtype so a resume is exact. `replace`: the folder
    is this run's own (a checkpoint's base) and may be overwritten whatever it holds."""
    if stored:
        _stored_copy(model, layout)
    if layout.report is not None:
        if replace and folder.exists() and not is_compressed_folder(folder):
            shutil.rmtree(folder)
        return save_compressed(model, folder, layout.report, layout.source.path, layout.source.label,
                               protected=layout.source.protected())
    if not replace:
        check_output(folder, layout.source)
    needed = sum(p.numel() * p.element_size() for p in unique_parameters(model)) + 2**20
    with atomic_folder(folder, needed=needed) as tmp:
        model.save_pretrained(tmp)
        if layout.tokenizer is not None:
            layout.tokenizer.save_pretrained(tmp)
    return folder


def _split_projectors(state: dict[str, Any]) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """An optimizer state dict without GaLore's projector objects, and their fields by parameter index (kept
    apart: `load_state_dict` would mangle their strings, and weights-only loading refuses the objects)."""
    out = {"param_groups": state["param_groups"], "state": {}}
    projectors = {}
    for index, entry in state["state"].items():
        entry = dict(entry)
        projector = entry.pop("projector", None)
        if projector is not None:
            projectors[index] = {k: getattr(projector, k) for k in
                                 ("rank", "verbose", "update_proj_gap", "scale", "proj_type", "ortho_matrix")}
        out["state"][index] = entry
    return out, projectors


def _restore_projectors(optimizer: torch.optim.Optimizer, projectors: dict[int, dict[str, Any]]) -> None:
    if not projectors:
        return
    from galore_torch.galore_projector import GaLoreProjector

    inner = getattr(optimizer, "optimizer", optimizer)
    params = [p for group in inner.param_groups for p in group["params"]]
    for index, saved in projectors.items():
        projector = GaLoreProjector(saved["rank"], saved["verbose"], saved["update_proj_gap"], saved["scale"],
                                    saved["proj_type"])
        ortho = saved["ortho_matrix"]
        device = params[index].device
        projector.ortho_matrix = [t.to(device) for t in ortho] if isinstance(ortho, list) else ortho.to(device)
        inner.state[params[index]]["projector"] = projector


def save_checkpoint(root: Path, step: int, model: nn.Module, layout: Layout, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], adapter: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` (see the module docstring), point `latest` at it, drop older ones."""
    name = f"step-{step:06d}"
    with atomic_folder(root / name) as tmp:
        save_model(model, tmp / "model", layout)
        if adapter is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()}, str(tmp / "adapter.safetensors"))
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        plain, projectors = _split_projectors(optimizer.state_dict())
        torch.save({"optimizer": plain, "projectors": projectors, "scheduler": scheduler.state_dict(), "rng": rng},
                   tmp / "training.pt")
        atomic_write_text(tmp / "state.json", json.dumps(state) + "\n")
    return _make_latest(root, name)


def _make_latest(root: Path, name: str) -> Path:
    """Point `latest` at the complete step folder `name`, then drop the older ones."""
    atomic_write_text(root / LATEST, name + "\n")
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def finish_checkpoint(root: Path, building: Path, step: int, scheduler: Any, state: dict[str, Any]) -> Path:
    """Complete a sharded checkpoint whose shards every process wrote into `building` (the main process): add the
    schedule and the run state, move it into place as step `step`, point `latest` at it, drop older ones."""
    torch.save({"scheduler": scheduler.state_dict()}, building / "training.pt")
    atomic_write_text(building / "state.json", json.dumps(state) + "\n")
    name = f"step-{step:06d}"
    shutil.rmtree(root / name, ignore_errors=True)
    building.rename(root / name)
    return _make_latest(root, name)


def latest_checkpoint(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint under `root` and its state.json, or None."""
    try:
        name = (root / LATEST).read_text().strip()
        folder = root / name
        return folder, json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _training_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's training.pt, or a one-line error naming it."""
    try:
        return torch.load(folder / "training.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, in one line
        raise WeLoreError(f"{folder / 'training.pt'}: unreadable training state "
                          f"({type(err).__name__}: {err})") from None


def load_training(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Restore optimizer, scheduler and RNG state from a checkpoint folder."""
    saved = _training_state(folder)
    optimizer.load_state_dict(saved["optimizer"])
    _restore_projectors(optimizer, saved.get("projectors", {}))
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])


def load_schedule(folder: Path, scheduler: Any) -> None:
    """Restore the learning-rate schedule of a sharded checkpoint (its shards hold the rest)."""
    scheduler.load_state_dict(_training_state(folder)["scheduler"])


def load_adapter(folder: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(folder / "adapter.safetensors"))
    except Exception as err:  # missing or truncated file: the checkpoint cannot resume a lora run
        raise WeLoreError(f"{folder / 'adapter.safetensors'}: unreadable LoRA checkpoint ({type(err).__name__}: "
                          f"{err}); delete {folder.parent} to start over") from None


def save_output(model: nn.Module, output: Path, layout: Layout, record: dict[str, Any]) -> Path:
    """Write the final model and its run record as one atomic step: a crash leaves the old output (or none),
    never a model folder without the record that marks it as this project's."""
    with atomic_folder(output, create=False) as staging:  # save_model makes the folder (its own layout)
        save_model(model, staging, layout, stored=True, replace=True)
        atomic_write_text(staging / RECORD, json.dumps(record, default=str) + "\n")
    return output


def remove_checkpoints(root: Path) -> None:
    """Delete what save_checkpoint wrote (never anything else a user may keep in that folder)."""
    for entry in [*root.glob("step-*"), *root.glob(".step-*"), root / LORA_BASE]:
        shutil.rmtree(entry, ignore_errors=True)
    (root / LATEST).unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        pass
