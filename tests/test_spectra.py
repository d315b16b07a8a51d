"""Spectra: equal to numpy's SVD, the same in memory and streamed, and identical across storage layouts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import save_file

from welore_core import SpectraConfig, WeLoreError, compute_spectra
from welore_core.compression.spectra import effective_rank, singular_values, stable_rank


def _numpy_svals(model: torch.nn.Module, name: str, transposed: bool = False) -> np.ndarray:
    w = model.get_submodule(name).weight.detach().double().numpy()
    return np.linalg.svd(w.T if transposed else w, compute_uv=False)


def test_spectra_equal_numpy_svd(llama: torch.nn.Module) -> None:
    spectra = compute_spectra(llama, SpectraConfig(use_cache=False))
    assert len(spectra.layers) == 21
    for layer in spectra.layers:
        ref = _numpy_svals(llama, layer.name)
        got = spectra.values[layer.name]
        assert got.dtype == np.float32 and got.shape == (layer.full_rank,)
        assert np.all(np.diff(got) <= 0)  # descending
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * ref[0])


@pytest.mark.parametrize("method", ["svdvals", "gram"])
def test_float64_and_gram_match_numpy_to_high_precision(llama: torch.nn.Module, method: str) -> None:
    spectra = compute_spectra(llama, SpectraConfig(dtype="float64", method=method, use_cache=False))
    for layer in spectra.layers:
        np.testing.assert_allclose(spectra.values[layer.name], _numpy_svals(llama, layer.name), rtol=0, atol=1e-10)


def test_wide_and_tall_orientations_give_the_same_values() -> None:
    w = torch.randn(7, 19, generator=torch.Generator().manual_seed(1))
    config = SpectraConfig(dtype="float64")
    np.testing.assert_allclose(singular_values(w, config), singular_values(w.T, config), atol=1e-12)


def test_stable_and_effective_rank_facts() -> None:
    assert stable_rank(np.ones(10)) == pytest.approx(10.0)  # orthogonal: every direction equal
    assert effective_rank(np.ones(10)) == pytest.approx(10.0)
    assert stable_rank(np.array([3.0, 0, 0])) == pytest.approx(1.0)
    assert effective_rank(np.array([3.0, 0, 0])) == pytest.approx(1.0)


def test_streaming_equals_in_memory(llama: torch.nn.Module, llama_dir: Path) -> None:
    memory = compute_spectra(llama, SpectraConfig(use_cache=False))
    streamed = compute_spectra(llama_dir, SpectraConfig(use_cache=False))
    assert [l.name for l in streamed.layers] == [l.name for l in memory.layers]
    assert [l.shape for l in streamed.layers] == [l.shape for l in memory.layers]
    for name, values in memory.values.items():
        np.testing.assert_array_equal(streamed.values[name], values)
    assert streamed.total_params == memory.total_params == sum(p.numel() for p in llama.parameters())


def test_sharded_checkpoint_with_index_streams_the_same(llama: torch.nn.Module, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    llama.save_pretrained(folder, max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    streamed = compute_spectra(folder / "model.safetensors.index.json", SpectraConfig(use_cache=False))
    memory = compute_spectra(llama, SpectraConfig(use_cache=False))
    for name, values in memory.values.items():
        np.testing.assert_array_equal(streamed.values[name], values)


def test_gpt2_streaming_knows_conv1d_orientation(tmp_path: Path) -> None:
    model = tiny_gpt2()
    model.save_pretrained(tmp_path / "gpt2")
    streamed = compute_spectra(tmp_path / "gpt2", SpectraConfig(use_cache=False))
    memory = compute_spectra(model, SpectraConfig(use_cache=False))
    assert [l.shape for l in streamed.layers] == [l.shape for l in memory.layers]
    assert streamed.layers[0].shape == (96, 32)
    for layer in memory.layers:
        np.testing.assert_array_equal(streamed.values[layer.name], memory.values[layer.name])


def test_base_model_checkpoint_without_prefix_is_mapped(tmp_path: Path) -> None:
    """A GPT-2 checkpoint saved from the base model names tensors 'h.0...' while modules are 'transformer.h.0...'."""
    model = tiny_gpt2()
    folder = tmp_path / "gpt2-base"
    model.save_pretrained(folder)
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    (folder / "model.safetensors").unlink()
    save_file(state, str(folder / "model.safetensors"))
    streamed = compute_spectra(folder, SpectraConfig(use_cache=False))
    assert streamed.layers[0].name == "transformer.h.0.attn.c_attn" and streamed.layers[0].tensor == "h.0.attn.c_attn.weight"


def test_bare_safetensors_file_without_config(llama: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in llama.state_dict().items()}, str(path))
    streamed = compute_spectra(path, SpectraConfig(use_cache=False))
    memory = compute_spectra(llama, SpectraConfig(use_cache=False))
    assert {l.name for l in streamed.layers} == {l.name for l in memory.layers}
    for name, values in memory.values.items():
        np.testing.assert_array_equal(streamed.values[name], values)


def test_bf16_checkpoint_streams(llama: torch.nn.Module, tmp_path: Path) -> None:
    llama.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    streamed = compute_spectra(tmp_path / "bf16", SpectraConfig(use_cache=False))
    ref = np.linalg.svd(llama.model.layers[0].self_attn.q_proj.weight.detach().double().numpy(), compute_uv=False)
    np.testing.assert_allclose(streamed.values["model.layers.0.self_attn.q_proj"], ref, atol=2e-6 * ref[0])


def test_progress_reports_every_layer(llama: torch.nn.Module) -> None:
    seen: list[tuple[int, int, str]] = []
    compute_spectra(llama, SpectraConfig(use_cache=False), progress=lambda d, t, n: seen.append((d, t, n)))
    assert [d for d, _, _ in seen] == list(range(1, 22)) and all(t == 21 for _, t, _ in seen)


def test_nan_weight_names_the_layer(llama: torch.nn.Module) -> None:
    with torch.no_grad():
        llama.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(WeLoreError, match=r"model\.layers\.1\.mlp\.up_proj.*NaN"):
        compute_spectra(llama, SpectraConfig(use_cache=False))


def test_bad_config_values_are_rejected() -> None:
    with pytest.raises(WeLoreError, match="dtype"):
        SpectraConfig(dtype="float16")
    with pytest.raises(WeLoreError, match="method"):
        SpectraConfig(method="qr")
    with pytest.raises(WeLoreError, match="device"):
        SpectraConfig(device="tpu")


def test_untied_head_is_never_replaced_by_the_embedding(tmp_path: Path) -> None:
    from conftest import tiny_neox

    model = tiny_neox()
    model.save_pretrained(tmp_path / "neox")
    config = SpectraConfig(with_head=True, use_cache=False)
    streamed, memory = compute_spectra(tmp_path / "neox", config), compute_spectra(model, config)
    assert streamed.layers[-1].name == "lm_head" and streamed.layers[-1].tensor == "embed_out.weight"
    for name, values in memory.values.items():
        np.testing.assert_array_equal(streamed.values[name], values)


def test_fused_moe_experts_are_reported_not_silently_skipped() -> None:
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    model = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, num_local_experts=4))
    spectra = compute_spectra(model, SpectraConfig(use_cache=False))
    fused = [p for n, p in model.named_parameters() if p.dim() > 2]
    if fused:  # transformers fuses expert weights into 3-D tensors
        assert any("not analysed" in note for note in spectra.notes)
    else:
        assert any("experts" in l.name for l in spectra.layers)


def test_adding_a_config_rebuilds_the_cached_layer_list(tmp_path: Path) -> None:
    model = tiny_gpt2()
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder)
    config = (folder / "config.json").rename(tmp_path / "config.json")
    by_names = compute_spectra(folder)
    assert by_names.layers[0].shape == (32, 96)  # a bare checkpoint cannot know c_attn is a Conv1D
    config.rename(folder / "config.json")
    by_config = compute_spectra(folder)
    assert by_config.layers[0].shape == (96, 32) and by_config.fingerprint == by_names.fingerprint


@pytest.mark.parametrize("device, message", [("cpufoo", "spectra device must be"), ("tpu", "spectra device must be")])
def test_bad_devices_are_rejected_up_front(device: str, message: str) -> None:
    with pytest.raises(WeLoreError, match=message):
        SpectraConfig(device=device)
    if not torch.cuda.is_available():
        with pytest.raises(WeLoreError, match="no such CUDA device"):
            SpectraConfig(device="cuda")


def test_truncated_shard_is_a_clear_error(llama_dir: Path) -> None:
    weights = llama_dir / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(WeLoreError, match=r"model\.safetensors: not a readable safetensors file \(tensor .* claims bytes"):
        compute_spectra(llama_dir, SpectraConfig(use_cache=False))
