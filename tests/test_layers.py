"""Layer discovery across architectures: names, blocks, kinds and (out, in) shapes."""
from __future__ import annotations

import pytest
from conftest import tiny_gpt2, tiny_llama, tiny_neox

from welore_core import WeLoreError, discover_layers
from welore_core.models import discover_from_names, find_blocks, select_layers

LLAMA_KINDS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def test_llama_layers_are_the_seven_projections_of_every_block() -> None:
    model = tiny_llama(layers=3)
    layers = discover_layers(model)
    assert [l.kind for l in layers] == LLAMA_KINDS * 3
    assert [l.block for l in layers] == [b for b in range(3) for _ in LLAMA_KINDS]
    names = dict(model.named_modules())
    assert all(l.name in names for l in layers)
    q, k = layers[0], layers[1]
    assert q.name == "model.layers.0.self_attn.q_proj" and q.shape == (32, 32)
    assert k.shape == (16, 32) and k.full_rank == 16  # 2 kv heads x 8
    assert layers[6].shape == (32, 48)  # down_proj: out=hidden, in=intermediate
    assert not any("embed" in l.name or "lm_head" in l.name for l in layers)


def test_gpt2_conv1d_is_reported_as_out_by_in() -> None:
    layers = discover_layers(tiny_gpt2(layers=2))
    assert [l.kind for l in layers[:4]] == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    c_attn, _, c_fc, c_proj = layers[:4]
    assert c_attn.name == "transformer.h.0.attn.c_attn" and c_attn.transposed
    assert c_attn.shape == (96, 32) and c_fc.shape == (128, 32) and c_proj.shape == (32, 128)
    assert c_attn.bias and c_attn.dense_params == 96 * 32 + 96


def test_neox_layers() -> None:
    layers = discover_layers(tiny_neox(layers=2))
    assert find_blocks(tiny_neox())[0] == "gpt_neox.layers"
    assert [l.kind for l in layers[:4]] == ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
                                             "mlp.dense_4h_to_h"]
    assert len(layers) == 8


def test_head_only_on_request() -> None:
    model = tiny_llama()
    with_head = discover_layers(model, with_head=True)
    assert with_head[-1].name == "lm_head" and with_head[-1].block == -1 and with_head[-1].shape == (64, 32)
    assert len(with_head) == len(discover_layers(model)) + 1


def test_names_only_discovery_matches_module_discovery() -> None:
    model = tiny_llama()
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    from_names = {(l.name, l.block, l.kind, l.shape) for l in discover_from_names(shapes)}
    from_modules = {(l.name, l.block, l.kind, l.shape) for l in discover_layers(model)}
    assert from_names == from_modules


def test_select_layers_filters_and_rejects_bad_patterns() -> None:
    layers = discover_layers(tiny_llama())
    assert {l.kind for l in select_layers(layers, include=r"mlp\.")} == {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert len(select_layers(layers, exclude=r"layers\.0\.")) == 14
    with pytest.raises(WeLoreError, match="bad layer pattern"):
        select_layers(layers, include="(")
    with pytest.raises(WeLoreError, match="no layer matches"):
        select_layers(layers, include="nothing-like-this")


def test_model_without_blocks_is_a_clear_error() -> None:
    import torch

    with pytest.raises(WeLoreError, match="no list of repeated decoder blocks"):
        discover_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))
