"""Model sources: what each kind of input resolves to, and the one-line errors for bad ones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from welore_core import SpectraConfig, WeLoreError, compute_spectra, load_model, resolve_model


def test_folder_resolves_to_its_safetensors(llama_dir: Path) -> None:
    source = resolve_model(llama_dir)
    assert source.kind == "folder" and source.streamable and source.config_path == llama_dir / "config.json"
    assert source.label == "tiny-llama"
    model = load_model(source)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_bin_only_folder_is_loaded_in_memory(llama: torch.nn.Module, tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    llama.config.save_pretrained(folder)
    torch.save(llama.state_dict(), folder / "pytorch_model.bin")
    source = resolve_model(folder)
    assert not source.streamable
    spectra = compute_spectra(source, SpectraConfig(use_cache=False))
    reference = compute_spectra(llama, SpectraConfig(use_cache=False))
    for name, values in reference.values.items():
        np.testing.assert_array_equal(spectra.values[name], values)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "not a model folder"),
    (lambda p: p.write_text("hello"), "expected a .gguf, .safetensors or .safetensors.index.json"),
])
def test_bad_paths(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "thing.txt"
    make(target)
    with pytest.raises(WeLoreError, match=message):
        resolve_model(target)


def test_damaged_safetensors_and_missing_shards(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 20)
    with pytest.raises(WeLoreError, match=f"{bad}: not a readable safetensors file"):
        resolve_model(bad)
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "model-00001.safetensors"}}))
    with pytest.raises(WeLoreError, match="shard\\(s\\) listed but missing"):
        resolve_model(folder)
    (folder / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(WeLoreError, match="not a safetensors index"):
        resolve_model(folder)


def test_hub_id_offline_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeLoreError, match="hub model 'nobody/no-such-model': could not download"):
        resolve_model("nobody/no-such-model")
    with pytest.raises(WeLoreError, match="not a hub id"):
        resolve_model("./not/here")


def test_bare_safetensors_cannot_be_instantiated(llama: torch.nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in llama.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeLoreError, match="no config.json"):
        load_model(resolve_model(tmp_path / "w.safetensors"))


def test_non_causal_lm_folders(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    with pytest.raises(WeLoreError, match="missing from the checkpoint.*is this a causal LM folder"):
        load_model(resolve_model(tmp_path / "bert"))  # an encoder: its LM head would be random
    DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2,
                                     hidden_dim=32)).save_pretrained(tmp_path / "distil")
    with pytest.raises(WeLoreError, match="not a causal LM transformers can load"):
        load_model(resolve_model(tmp_path / "distil"))
