"""The fisher strategy (issue 15): whitened spectra scaled by each layer's output Fisher, spent greedily on the
loss's scale. The Fisher pass is checked against autograd, the allocation against brute force."""
from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from conftest import tiny_llama

import welore_core as wc
from welore_core.compression.plan import greedy_ranks, kept_params, truncation_loss
from welore_core.compression.spectra import fisher_spectra, output_fisher


def _reference_fisher(model: torch.nn.Module, batches: list[torch.Tensor], names: list[str]) -> dict[str, float]:
    """Mean (∂ℓ/∂y)² per layer by autograd.grad on the captured outputs, parameters trainable as loaded."""
    sums = {n: 0.0 for n in names}
    counts = {n: 0 for n in names}
    for batch in batches:
        outs: dict[str, torch.Tensor] = {}
        hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n, outs=outs: outs.__setitem__(n, o))
                 for n in names]
        loss = model(input_ids=batch, labels=batch).loss * (batch.numel() - 1)
        for h in hooks:
            h.remove()
        grads = torch.autograd.grad(loss, [outs[n] for n in names])
        for n, g in zip(names, grads):
            sums[n] += float(g.double().pow(2).sum())
            counts[n] += g.numel()
    return {n: sums[n] / counts[n] for n in names}


def test_output_fisher_is_the_mean_squared_gradient_at_each_layer_output() -> None:
    model = tiny_llama(layers=2, seed=3).eval()
    names = [l.name for l in wc.discover_layers(model)]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 64, (1, 24), generator=g) for _ in range(3)]
    got = output_fisher(model, batches, names)
    want = _reference_fisher(model, batches, names)
    assert set(got) == set(names)
    for n in names:
        assert got[n] == pytest.approx(want[n], rel=1e-5), n
        assert got[n] > 0


def test_the_fisher_pass_leaves_the_model_as_it_found_it() -> None:
    model = tiny_llama(layers=2, seed=4)
    model.train()
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    output_fisher(model, [torch.arange(16)[None] % 64], [l.name for l in wc.discover_layers(model)])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())  # no gradient left on any parameter
    assert model.training
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())


def _whitened(seed: int, shapes: list[tuple[int, int]]) -> wc.Spectra:
    rng = np.random.default_rng(seed)
    layers = [wc.LayerInfo(f"model.layers.0.l{j}", 0, f"l{j}", shape, bias=False) for j, shape in enumerate(shapes)]
    values = {l.name: np.sort(rng.pareto(1.3, l.full_rank) + 0.01)[::-1] for l in layers}
    spectra = wc.Spectra("synthetic", "f" * 64, wc.SpectraConfig(use_cache=False), layers, values,
                         sum(l.dense_params for l in layers) + 100)
    return dataclasses.replace(spectra, basis="whitened")


def test_fisher_spectra_scale_each_layer_and_leave_thresholds_alone() -> None:
    whitened = _whitened(0, [(12, 8), (8, 8), (16, 6)])
    fisher = {l.name: f for l, f in zip(whitened.layers, (0.01, 4.0, 0.5))}
    scaled = fisher_spectra(whitened, fisher)
    assert scaled.basis == "fisher"
    for l in whitened.layers:
        np.testing.assert_allclose(scaled.values[l.name], whitened.values[l.name] * np.sqrt(fisher[l.name]))
    by_threshold = [wc.make_plan(s, wc.PlanConfig(strategy="whitened", err=40.0)).ranks() for s in (whitened, scaled)]
    assert by_threshold[0] == by_threshold[1]  # min-max normalisation removes the scale
    with pytest.raises(wc.WeLoreError, match="no Fisher value for 1 layer"):
        fisher_spectra(whitened, {l.name: 1.0 for l in whitened.layers[:2]})
    with pytest.raises(wc.WeLoreError, match="not a finite non-negative number"):
        fisher_spectra(whitened, {**fisher, whitened.layers[0].name: float("nan")})


def _brute_force_absolute(layers: list[wc.LayerInfo], values: dict[str, np.ndarray], budget: float) -> float:
    best = np.inf
    choices = [[*range(1, min(l.full_rank, (l.shape[0] * l.shape[1] - 1) // sum(l.shape)) + 1), l.full_rank]
               for l in layers]
    for ranks in itertools.product(*choices):
        if sum(kept_params(l, r) for l, r in zip(layers, ranks)) <= budget:
            best = min(best, truncation_loss(layers, values, list(ranks), relative=False))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_fisher_allocation_is_optimal_on_the_loss_scale_when_increments_cost_the_same(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    layers = [wc.LayerInfo(f"l{i}", 0, f"l{i}", (9, 9), bias=False) for i in range(3)]
    values = {l.name: np.sort(rng.pareto(1.5, 9) + 0.01)[::-1] * rng.uniform(0.1, 10) for l in layers}
    pct = float(rng.uniform(30, 75))  # rank 1 everywhere keeps 22 % of the parameters: up to 78 % can go
    ranks = greedy_ranks(layers, values, pct=pct, relative=False)
    budget = (1 - pct / 100) * sum(l.dense_params for l in layers)
    assert sum(kept_params(l, r) for l, r in zip(layers, ranks)) <= budget
    assert truncation_loss(layers, values, ranks, relative=False) == pytest.approx(
        _brute_force_absolute(layers, values, budget), rel=1e-12)


def test_a_layer_the_loss_barely_feels_gives_its_rank_first() -> None:
    whitened = _whitened(1, [(16, 16), (16, 16)])
    quiet, loud = (l.name for l in whitened.layers)
    whitened.values[loud] = whitened.values[quiet].copy()  # the same relative spectra: greedy cannot tell them apart
    plain = wc.make_plan(whitened, wc.PlanConfig(strategy="greedy", params=30.0)).ranks()
    assert plain[quiet] == plain[loud] or abs(plain[quiet] - plain[loud]) == 1
    weighted = wc.make_plan(fisher_spectra(whitened, {quiet: 1e-3, loud: 1.0}),
                            wc.PlanConfig(strategy="fisher", params=30.0)).ranks()
    assert weighted[quiet] < plain[quiet] and weighted[loud] > plain[loud]


def test_the_fisher_strategy_plans_only_on_fisher_spectra() -> None:
    whitened = _whitened(2, [(8, 8)])
    with pytest.raises(wc.WeLoreError, match="Fisher-weighted spectra"):
        wc.make_plan(whitened, wc.PlanConfig(strategy="fisher", params=10.0))
    with pytest.raises(wc.WeLoreError, match="fisher strategy has no threshold k"):
        wc.PlanConfig(strategy="fisher", k=0.3)


def _cli(capsys, *argv: str) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def,type-arg]
    from welore_core.cli import main

    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]) if code == 0 else {}, err


@pytest.mark.slow
def test_plan_and_compress_with_the_fisher_strategy(lm_dir, corpus_file, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    calib = ["--calib", str(corpus_file), "--calib-samples", "4", "--calib-seqlen", "32"]
    code, _, err = _cli(capsys, "plan", str(lm_dir), "--strategy", "fisher", "--params", "10")
    assert code == 2 and "--strategy fisher needs --calib PATH" in err
    rankmap = tmp_path / "fisher.json"
    code, plan, err = _cli(capsys, "plan", str(lm_dir), "--strategy", "fisher", "--params", "10", *calib,
                           "-o", str(rankmap))
    assert code == 0, err
    assert plan["strategy"] == "fisher" and plan["k"] is None and abs(plan["totals"]["params_removed_pct"] - 10) < 3
    saved = json.loads(rankmap.read_text())
    assert saved["strategy"] == "fisher" and saved["target_params"] == 10.0
    code, result, err = _cli(capsys, "compress", str(lm_dir), "--rankmap", str(rankmap), "-o", str(tmp_path / "c"))
    assert code == 0, err
    assert result["mode"] == "all" and result["params_after"] < result["params_before"]


@pytest.mark.slow
def test_a_sweep_plans_fisher_beside_greedy(lm_dir, corpus_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, result, err = _cli(capsys, "sweep", str(lm_dir), "--params", "20", "--strategies", "greedy,fisher",
                             "--calib", str(corpus_file), "--calib-samples", "4", "--calib-seqlen", "32", "--data",
                             str(corpus_file), "--tokens", "256", "--seqlen", "32", "-o", str(tmp_path / "s"))
    assert code == 0, err
    rows = result["rows"]
    assert [r["strategy"] for r in rows] == ["dense", "greedy", "fisher"]
    assert all(abs(r["params_removed_pct"] - 20) < 3 for r in rows[1:])
