"""Parameter and size budgets, and the data-aware strategies (issue 15): pure functions from spectra (and
calibration statistics) to ranks, checked against brute force on tiny cases."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import tiny_llama

import welore_core as wc
from welore_core.compression.plan import (greedy_ranks, kept_params, removed_pct, sensitivity_weights, truncation_loss,
                                          uniform_param_ranks)
from welore_core.compression.spectra import collect_grams, whitened_spectra, whitened_values

SHAPES = [(48, 32), (32, 32), (64, 24), (24, 64)]


def synthetic(seed: int, shapes: list[tuple[int, int]] = SHAPES, blocks: int = 3) -> wc.Spectra:
    rng = np.random.default_rng(seed)
    layers, values = [], {}
    for b in range(blocks):
        for j, shape in enumerate(shapes):
            layer = wc.LayerInfo(f"model.layers.{b}.l{j}", b, f"l{j}", shape, bias=False)
            layers.append(layer)
            s = np.sort(rng.pareto(1.0 + j, min(shape)) + 0.01)[::-1]
            values[layer.name] = s.astype(np.float32)
    dense = sum(l.dense_params for l in layers)
    return wc.Spectra("synthetic", "f" * 64, wc.SpectraConfig(use_cache=False), layers, values, dense + 1000)


@pytest.mark.parametrize("strategy", ["welore", "energy"])
@pytest.mark.parametrize("pct", [5.0, 10.0, 20.0, 40.0])
def test_a_parameter_budget_is_the_closest_any_threshold_achieves(strategy: str, pct: float) -> None:
    spectra = synthetic(1)
    plan = wc.make_plan(spectra, wc.PlanConfig(strategy=strategy, params=pct))
    got = plan.totals.params_removed_pct
    scores = wc.prepare_scores(spectra, strategy)
    best = min(abs(removed_pct(spectra.layers, _ranks(scores, float(k), strategy)) - pct)
               for k in np.unique(scores.pooled))
    assert abs(got - pct) == pytest.approx(best, abs=1e-9)
    assert plan.totals.params_removed_pct == pytest.approx(removed_pct(spectra.layers, [l.rank for l in plan.layers]))


def _ranks(scores: wc.Scores, k: float, strategy: str) -> np.ndarray:
    from welore_core.compression.plan import ranks_at

    return ranks_at(scores.ascending, k, strategy)


def test_a_size_budget_is_the_same_parameter_budget_seen_from_the_whole_model() -> None:
    spectra = synthetic(2)
    by_params = wc.make_plan(spectra, wc.PlanConfig(params=15.0))
    dense = sum(l.dense_params for l in spectra.layers)
    size = (spectra.total_params - 0.15 * dense) * 2 / 2**20
    by_size = wc.make_plan(spectra, wc.PlanConfig(size_mib=size, size_dtype="bfloat16"))
    assert by_size.ranks() == by_params.ranks()
    with pytest.raises(wc.WeLoreError, match="outside what this model can be in bfloat16"):
        wc.make_plan(spectra, wc.PlanConfig(size_mib=1e-6))


def test_uniform_under_a_parameter_budget_is_the_peers_uniform_rank() -> None:
    spectra = synthetic(3)
    plan = wc.make_plan(spectra, wc.PlanConfig(strategy="uniform", params=20.0))
    for l in plan.layers:
        m, n = l.shape
        assert l.rank == min(l.full_rank, max(1, int(np.floor(m * n * 0.8 / (m + n)))))
        assert kept_params(next(x for x in spectra.layers if x.name == l.name), l.rank) <= 0.8 * m * n + 1e-9
    assert list(uniform_param_ranks(spectra.layers, 0.2)) == [l.rank for l in plan.layers]


def _brute_force(layers: list[wc.LayerInfo], values: dict[str, np.ndarray], budget: float) -> float:
    """The least truncation loss of any rank vector within a parameter budget: every factored rank that saves
    parameters, or the layer left dense."""
    best = np.inf
    choices = [[*range(1, min(l.full_rank, (l.shape[0] * l.shape[1] - 1) // sum(l.shape)) + 1), l.full_rank]
               for l in layers]
    for ranks in itertools.product(*choices):
        if sum(kept_params(l, r) for l, r in zip(layers, ranks)) <= budget:
            best = min(best, truncation_loss(layers, values, list(ranks)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_optimal_when_every_increment_costs_the_same(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = [wc.LayerInfo(f"l{i}", 0, f"l{i}", (9, 9), bias=False) for i in range(3)]
    values = {l.name: np.sort(rng.pareto(1.5, 9) + 0.01)[::-1] for l in layers}
    pct = float(rng.uniform(30, 80))
    ranks = greedy_ranks(layers, values, pct=pct)
    budget = (1 - pct / 100) * sum(l.dense_params for l in layers)
    assert sum(kept_params(l, r) for l, r in zip(layers, ranks)) <= budget
    assert truncation_loss(layers, values, ranks) == pytest.approx(_brute_force(layers, values, budget), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_with_unequal_costs_is_within_one_increment_of_the_optimum(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    layers = [wc.LayerInfo("a", 0, "a", (8, 6), False), wc.LayerInfo("b", 0, "b", (10, 5), False),
              wc.LayerInfo("c", 0, "c", (7, 7), False)]
    values = {l.name: np.sort(rng.pareto(1.2, l.full_rank) + 0.01)[::-1] for l in layers}
    pct = float(rng.uniform(30, 70))
    ranks = greedy_ranks(layers, values, pct=pct)
    budget = (1 - pct / 100) * sum(l.dense_params for l in layers)
    assert sum(kept_params(l, r) for l, r in zip(layers, ranks)) <= budget
    largest_step = max(float(values[l.name][1] ** 2 / (values[l.name] ** 2).sum()) for l in layers)
    assert truncation_loss(layers, values, ranks) <= _brute_force(layers, values, budget) + largest_step


def test_greedy_under_an_err_budget_keeps_that_many_ranks() -> None:
    spectra = synthetic(4)
    plan = wc.make_plan(spectra, wc.PlanConfig(strategy="greedy", err=40.0))
    assert plan.k is None and plan.achieved_err == pytest.approx(40.0, abs=100 / sum(l.full_rank for l in spectra.layers))


def test_sensitivity_weights_move_rank_towards_the_sensitive_layers() -> None:
    spectra = synthetic(5)
    rows = [{"group": "l0", "ppl_increase": 50.0}, {"group": "l1", "ppl_increase": 1.01},
            {"group": "l2", "ppl_increase": 1.01}, {"group": "l3", "ppl_increase": 1.01}]
    weights = sensitivity_weights(rows, spectra.layers)
    plain = wc.make_plan(spectra, wc.PlanConfig(strategy="greedy", params=30.0))
    weighted = wc.make_plan(spectra, wc.PlanConfig(strategy="greedy", params=30.0), weights=weights)
    kept = lambda p: sum(l.rank for l in p.layers if l.kind == "l0")  # noqa: E731
    assert kept(weighted) > kept(plain)


def test_whitened_values_are_the_singular_values_of_w_times_l() -> None:
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(12, 20, generator=g, dtype=torch.float64), torch.randn(200, 20, generator=g, dtype=torch.float64)
    gram = x.T @ x / 200
    chol = torch.linalg.cholesky(gram + 1e-2 * gram.diagonal().mean() * torch.eye(20, dtype=torch.float64))
    np.testing.assert_allclose(whitened_values(w, gram), torch.linalg.svdvals(w @ chol).numpy(), rtol=1e-9)


def test_whitened_spectra_plan_with_the_welore_rule_and_measure_output_error() -> None:
    model = tiny_llama()
    batches = [torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    names = [l.name for l in wc.discover_layers(model)]
    spectra = whitened_spectra(model, collect_grams(model, batches, names), calib_digest="x")
    assert spectra.basis == "whitened" and len(spectra.layers) == 21
    plan = wc.make_plan(spectra, wc.PlanConfig(strategy="whitened", params=10.0))
    assert plan.totals.params_removed_pct == pytest.approx(10.0, abs=3.0)
    with pytest.raises(wc.WeLoreError, match="whitened strategy plans on whitened spectra"):
        wc.make_plan(wc.compute_spectra(model), wc.PlanConfig(strategy="whitened", err=30))


def test_a_budget_plan_round_trips_through_its_rank_map(llama_dir) -> None:  # type: ignore[no-untyped-def]
    spectra = wc.compute_spectra(llama_dir)
    plan = wc.make_plan(spectra, wc.PlanConfig(params=12.0))
    data = wc.rankmap_dict(plan)
    assert data["target_params"] == 12.0 and data["target_err"] is None
    again = wc.plan_from_rankmap(data, spectra)
    assert again.config.params == 12.0 and again.ranks() == plan.ranks()


def _cli(capsys, *argv: str) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def,type-arg]
    from welore_core.cli import main

    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


def test_plan_and_compress_take_a_parameter_budget(lm_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, plan, _ = _cli(capsys, "plan", str(lm_dir), "--params", "12")
    assert code == 0 and plan["target_params"] == 12.0 and abs(plan["totals"]["params_removed_pct"] - 12) < 3
    code, result, _ = _cli(capsys, "compress", str(lm_dir), "--params", "12", "-o", str(tmp_path / "c"))
    assert code == 0 and result["mode"] == "all"  # a parameter budget stores every layer the smaller way
    dense = sum(l.dense_params for l in wc.compute_spectra(lm_dir).layers)
    removed = result["params_before"] - result["params_after"]
    assert removed == pytest.approx(plan["totals"]["params_removed_pct"] / 100 * dense, abs=1)


def test_the_data_aware_strategies_need_and_use_calibration_text(lm_dir, corpus_file, capsys) -> None:  # type: ignore[no-untyped-def]
    code, result, err = _cli(capsys, "plan", str(lm_dir), "--strategy", "whitened", "--params", "10")
    assert code == 2 and "--strategy whitened needs --calib PATH" in err
    code, plan, _ = _cli(capsys, "plan", str(lm_dir), "--strategy", "whitened", "--params", "10", "--calib",
                         str(corpus_file), "--calib-samples", "4", "--calib-seqlen", "32")
    assert code == 0 and plan["strategy"] == "whitened"
    code, greedy, _ = _cli(capsys, "plan", str(lm_dir), "--strategy", "greedy", "--params", "10")
    assert code == 0 and greedy["k"] is None and abs(greedy["totals"]["params_removed_pct"] - 10) < 3


def test_compress_then_finetune_records_perplexity_before_and_after(lm_dir, corpus_file, tmp_path,  # type: ignore[no-untyped-def]
                                                                    capsys) -> None:
    code, result, err = _cli(capsys, "compress", str(lm_dir), "--err", "50", "--then-finetune", "lrc", "--ft-data",
                             str(corpus_file), "--ft-steps", "2", "--ft-seqlen", "32", "--device", "cpu", "-o",
                             str(tmp_path / "c"))
    assert code == 0, err
    tuned = result["finetuned"]
    assert tuned["output"] == f"{tmp_path / 'c'}-lrc" and tuned["heldout_ppl_after"] != tuned["heldout_ppl_before"]
    runs = wc.Registry.default().frame("finetune")
    assert len(runs) == 1 and runs["ppl"].iloc[0] == pytest.approx(tuned["heldout_ppl_after"])
    code, _, err = _cli(capsys, "compress", str(lm_dir), "--err", "50", "--then-finetune", "lrc",
                        "-o", str(tmp_path / "d"))
    assert code == 2 and "--then-finetune needs --ft-data PATH" in err and not (tmp_path / "d").exists()


def test_a_sweep_over_parameter_budgets(lm_dir, corpus_file, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, result, err = _cli(capsys, "sweep", str(lm_dir), "--params", "10,20", "--strategies", "welore,greedy",
                             "--data", str(corpus_file), "--tokens", "256", "--seqlen", "32", "-o", str(tmp_path / "s"))
    assert code == 0, err
    rows = result["rows"]
    assert [r["strategy"] for r in rows] == ["dense", "welore", "welore", "greedy", "greedy"]
    assert all(r["mode"] == "all" for r in rows[1:]) and [r["target_params"] for r in rows[1:]] == [10.0, 20.0] * 2


def test_greedy_handles_layers_too_small_to_save_anything() -> None:
    layers = [wc.LayerInfo("tiny", 0, "tiny", (2, 2), False), wc.LayerInfo("big", 0, "big", (8, 8), False)]
    values = {"tiny": np.array([2.0, 1.0]), "big": np.linspace(3, 0.1, 8)}
    ranks = greedy_ranks(layers, values, pct=10.0)
    assert ranks[0] in (1, 2) and 1 <= ranks[1] <= 8


def test_a_zero_parameter_budget_leaves_uniform_layers_whole() -> None:
    spectra = synthetic(6)
    plan = wc.make_plan(spectra, wc.PlanConfig(strategy="uniform", params=0.0))
    assert all(l.rank == l.full_rank for l in plan.layers) and plan.totals.params_removed_pct == 0.0


def test_whitened_plans_are_recorded_as_plans_of_the_weights(lm_dir, corpus_file) -> None:  # type: ignore[no-untyped-def]
    from welore_core.compression.spectra import calibrated_spectra

    weight = wc.compute_spectra(lm_dir, wc.SpectraConfig(include="mlp"))
    model = wc.load_model(wc.resolve_model(lm_dir))
    tokenizer = wc.models.load_tokenizer(wc.resolve_model(lm_dir))
    whitened, _, _ = calibrated_spectra(model, tokenizer, wc.Calibration(str(corpus_file), 4, 32), like=weight)
    assert [l.name for l in whitened.layers] == [l.name for l in weight.layers]  # the same filtered layers
    assert (whitened.fingerprint, whitened.model) == (weight.fingerprint, weight.model)


def test_a_rank_map_made_for_a_budget_compresses_every_layer(lm_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, plan, _ = _cli(capsys, "plan", str(lm_dir), "--params", "15", "-o", str(tmp_path / "rm.json"))
    code, result, _ = _cli(capsys, "compress", str(lm_dir), "--rankmap", str(tmp_path / "rm.json"),
                           "-o", str(tmp_path / "c"))
    assert code == 0 and result["mode"] == "all"
