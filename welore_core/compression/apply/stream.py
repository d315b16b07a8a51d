"""Compression streamed from safetensors: a checkpoint is compressed tensor by tensor, without building the model.

Each input shard becomes one output shard: its tensors are read one at a time, a layer the plan changes is
moved to the compression device, upcast, factored (or truncated) there and written back in its stored dtype
(bf16 in, bf16 out), everything else is copied as it is. The output shard's header is known before any
tensor is computed (the ranks fix every shape), so each tensor goes to disk as soon as it exists: host memory
holds one tensor and its factors, never a shard and never a float32 copy of the model; the device holds one
layer. The folder is the one
`save_compressed` writes (loaded back by `load_compressed`, bit-identical factors to the in-memory path).

It needs checkpoint tensor names that are the model's own (HF LLaMA / Mistral / Qwen / GPT-NeoX folders);
`streamable(source)` says whether a checkpoint qualifies, and the CLI falls back to the in-memory path if not.
ActSVD needs activations, so the model: it takes the in-memory path on the device.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from pathlib import Path

import torch

from ...errors import WeLoreError
from ...models import (STORED_DTYPES, LayerInfo, ModelSource, ShardReader, ShardWriter, TensorIndex, count_parameters,
                       meta_model, source_layers, tensor_index)
from ...utils import Progress, atomic_folder
from ..plan.target import Target
from .compress import CompressionConfig, factors_of, layer_targets, truncated_of
from .folder import CompressionReport, check_output, write_metadata


def streamable(source: ModelSource) -> bool:
    """Can `source` be compressed without building the model: safetensors weights, a config, and tensor names
    that are the model's own state-dict names (so the output loads with `load_compressed`)?"""
    if not source.streamable or source.config_path is None:
        return False
    names = set(tensor_index(source.weight_files))
    return names <= set(meta_model(source).state_dict())


def compress_streamed(source: ModelSource, target: Target, config: CompressionConfig, output: Path,
                      progress: Progress | None = None) -> CompressionReport:
    """Compress the checkpoint of `source` to `target` into the compressed-model folder `output` (see above)."""
    if config.act_svd:
        raise WeLoreError("ActSVD needs the model's activations: compress it in memory (compress_to)")
    start = time.perf_counter()
    output = Path(output)
    check_output(output, source.protected())
    index = tensor_index(source.weight_files)
    layers, _ = source_layers(source, index)
    meta = meta_model(source)
    todo, data = layer_targets(layers, target, source.label)
    tied = bool(getattr(meta.config, "tie_word_embeddings", False))
    for t in todo:
        if t.layer.block == -1 and tied and t.rank < t.layer.full_rank:
            raise WeLoreError(f"layer {t.layer.name} is tied to the input embedding: compressing it would change the "
                              "embedding too; drop it from the rank map (plan without --with-head)")
    todo = [t for t in todo if (t.lrc if config.mode == "lrc" else t.rank < t.layer.full_rank)]
    report = CompressionReport(config.mode, config.act_svd, count_parameters(meta), 0, rankmap=data)
    changes = {t.layer.tensor: t for t in todo}
    factor = {t.layer.name: config.mode == "lrc" or t.layer.factored_params(t.rank) < t.layer.dense_params for t in todo}
    moved = {f"{t.layer.name}.bias" for t in todo if t.layer.bias and factor[t.layer.name]}  # into A, with the factors
    shards = _by_file(index)
    needed = sum(f.stat().st_size for f in source.weight_files) + 2**20  # at most the input's size, plus metadata
    done, saved = 0, 0
    with atomic_folder(output, needed=needed) as tmp:
        weight_map: dict[str, str] = {}
        for i, (file, names) in enumerate(shards.items(), 1):
            out_name = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            entries = _entries(names, index, changes, factor, moved)
            with ShardReader(file) as reader, ShardWriter(tmp / out_name, entries, {"format": "pt"}) as writer:
                for name in names:
                    if name in changes:
                        t = changes[name]
                        factored = factor[t.layer.name]
                        for out, tensor in _compress(t.layer, t.rank, reader.get(name), index, config, factored).items():
                            writer.write(out, tensor)
                        (report.factored if factored else report.truncated)[t.layer.name] = t.rank
                        saved += t.layer.dense_params - t.layer.factored_params(t.rank) if factored else 0
                        done += 1
                        if progress:
                            progress(done, len(todo), t.layer.name)
                    elif name not in moved:  # a moved bias is written with its layer's factors
                        writer.write(name, reader.get(name))
            weight_map.update(dict.fromkeys(entries, out_name))
        if len(shards) > 1:
            total = sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
        shutil.copy2(source.config_path, tmp / "config.json")  # type: ignore[arg-type]
        order = [t.layer.name for t in todo]  # the plan's order, as compress_to reports it (shards are alphabetical)
        report.factored = {n: report.factored[n] for n in order if n in report.factored}
        report.truncated = {n: report.truncated[n] for n in order if n in report.truncated}
        report.params_after = report.params_before - saved
        write_metadata(tmp, report, source.path, source.label, output)
    report.seconds = time.perf_counter() - start
    return report


def _by_file(index: TensorIndex) -> dict[Path, list[str]]:
    """Tensor names per shard, in the order the shards and their headers list them."""
    shards: dict[Path, list[str]] = defaultdict(list)
    for name, (file, _, _) in index.items():
        shards[file].append(name)
    return dict(sorted(shards.items()))


def _entries(names: list[str], index: TensorIndex, changes: dict[str, Target], factor: dict[str, bool],
             moved: set[str]) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The output shard's tensors, in writing order, with their dtypes and shapes (a shard's header comes first)."""
    entries: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    for name in names:
        _, shape, stored = index[name]
        dtype = STORED_DTYPES[stored]
        if name in changes and factor[changes[name].layer.name]:
            layer, rank = changes[name].layer, changes[name].rank
            out, inp = shape[::-1] if layer.transposed else shape
            entries[f"{layer.name}.A.weight"] = (dtype, (out, rank))
            entries[f"{layer.name}.B.weight"] = (dtype, (rank, inp))
            if layer.bias:
                _, bias_shape, bias_stored = index[f"{layer.name}.bias"]
                entries[f"{layer.name}.A.bias"] = (STORED_DTYPES[bias_stored], bias_shape)
        elif name not in moved:
            entries[name] = (dtype, shape)
    return entries


def _compress(layer: LayerInfo, rank: int, stored: torch.Tensor, index: TensorIndex, config: CompressionConfig,
              factored: bool) -> dict[str, torch.Tensor]:
    """The output tensors of one layer: its factors (and bias, moved to A), or its truncation in place."""
    weight = stored.T if layer.transposed else stored  # (out, in)
    if factored:
        a, b = factors_of(weight, rank, None, config)  # on the device, upcast; back in the stored dtype
        pieces = {f"{layer.name}.A.weight": a.contiguous(), f"{layer.name}.B.weight": b.contiguous()}
        if layer.bias:
            bias_name = f"{layer.name}.bias"
            with ShardReader(index[bias_name][0]) as reader:
                pieces[f"{layer.name}.A.bias"] = reader.get(bias_name)
        return pieces
    approx = truncated_of(weight, rank, None, config)  # (out, in), as compress_to's truncate_layer computes it
    return {layer.tensor: (approx.T if layer.transposed else approx).contiguous()}
