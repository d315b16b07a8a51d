"""Rank plans: the solved k hits the target, LRC flags, parameter totals, and errors from the spectrum alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from welore_core import LayerInfo, PlanConfig, Spectra, SpectraConfig, WeLoreError, compute_spectra, make_plan
from welore_core.compression.plan import err_for_k, plan_from_ranks, prepare_scores


def synthetic(seed: int, shapes: list[tuple[int, int]], total_extra: int = 1000) -> Spectra:
    """Spectra with heavy and light tails, as a pretrained model has (no model needed)."""
    rng = np.random.default_rng(seed)
    layers, values = [], {}
    for i, shape in enumerate(shapes):
        n = min(shape)
        decay = rng.uniform(0.2, 3.0)
        s = np.sort(np.exp(-decay * np.linspace(0, 4, n)) + rng.uniform(0, 0.05, n))[::-1].astype(np.float32)
        layer = LayerInfo(f"blocks.{i // 2}.w{i % 2}", i // 2, f"w{i % 2}", shape, bias=False)
        layers.append(layer)
        values[layer.name] = s
    params = sum(l.dense_params for l in layers) + total_extra
    return Spectra("synthetic", f"{seed:064x}", SpectraConfig(), layers, values, params)


SHAPES = [(64, 64), (32, 64), (96, 48), (48, 96), (64, 64), (16, 80)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), err=st.floats(0, 95), normalization=st.sampled_from(["minmax", "max"]))
def test_welore_plan_hits_the_target_err(seed: int, err: float, normalization: str) -> None:
    spectra = synthetic(seed, SHAPES)
    plan = make_plan(spectra, PlanConfig(err=err, normalization=normalization))
    total = sum(min(s) for s in SHAPES)
    pooled = []
    for layer in plan.layers:
        norm = spectra.values[layer.name].astype(np.float64)
        lo = norm.min() if normalization == "minmax" else 0.0
        norm = (norm - lo) / (norm.max() - lo)
        pooled.append(norm)
        assert layer.rank == max(1, int(np.sum(norm >= plan.k)))  # the paper's r = sum(S >= k)
    # no threshold gets closer to the target (minmax ties every layer's minimum at 0)
    values = np.concatenate(pooled)
    best = min(abs(int(np.sum(values < u)) - err / 100 * total) for u in np.unique(values))
    assert abs(plan.achieved_err / 100 * total - err / 100 * total) == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize("strategy", ["welore", "energy"])
def test_planning_at_the_solved_k_reproduces_the_plan(strategy: str) -> None:
    spectra = synthetic(3, SHAPES)
    by_err = make_plan(spectra, PlanConfig(strategy=strategy, err=40))
    by_k = make_plan(spectra, PlanConfig(strategy=strategy, err=None, k=by_err.k))
    assert by_k.ranks() == by_err.ranks() and by_k.achieved_err == by_err.achieved_err
    assert by_k.target_err is None
    # the inverse: ERR for a given k, straight from the prepared scores
    assert err_for_k(prepare_scores(spectra, strategy), by_err.k) == pytest.approx(by_err.achieved_err, abs=1e-9)


def test_lrc_flag_follows_the_reduction() -> None:
    plan = make_plan(synthetic(1, SHAPES), PlanConfig(err=50, min_ratio=0.5))
    for l in plan.layers:
        assert l.lrc == (l.rank < 0.5 * l.full_rank) and l.reduction == pytest.approx(1 - l.rank / l.full_rank)
        assert l.factored_params == l.rank * (l.shape[0] + l.shape[1])


def test_totals_count_the_partition_and_the_factored_parameters() -> None:
    spectra = synthetic(1, SHAPES)
    plan = make_plan(spectra, PlanConfig(err=50, min_ratio=0.5))
    lrc = [l for l in plan.layers if l.lrc]
    t = plan.totals
    assert t.lrc == len(lrc) and t.lrc + t.nlrc == len(SHAPES)
    assert t.params_compressed == spectra.total_params - sum(l.dense_params - l.factored_params for l in lrc)
    assert t.trainable_params == sum(l.factored_params for l in lrc)
    assert t.bytes_compressed["bfloat16"] == 2 * t.params_compressed
    assert t.params_all_layers <= t.params_compressed <= t.params_dense


def test_min_ratio_one_makes_no_layer_an_lrc() -> None:
    spectra = synthetic(1, SHAPES)
    none_lrc = make_plan(spectra, PlanConfig(err=50, min_ratio=1.0))
    assert none_lrc.totals.lrc == 0 and none_lrc.totals.params_compressed == spectra.total_params


def test_relative_error_equals_the_truncation_error_of_the_real_matrix(llama: torch.nn.Module) -> None:
    spectra = compute_spectra(llama, SpectraConfig(dtype="float64", use_cache=False))
    plan = make_plan(spectra, PlanConfig(err=45))
    for lp in plan.layers[:7]:
        w = llama.get_submodule(lp.name).weight.detach().double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        w_r = u[:, : lp.rank] @ torch.diag(s[: lp.rank]) @ vh[: lp.rank]
        direct = float(torch.linalg.norm(w - w_r) / torch.linalg.norm(w))
        assert lp.rel_error == pytest.approx(direct, abs=1e-9)


def test_uniform_reduces_every_layer_by_the_same_ratio() -> None:
    plan = make_plan(synthetic(2, SHAPES), PlanConfig(strategy="uniform", err=30))
    for l in plan.layers:
        assert l.rank == int(np.floor(0.7 * l.full_rank + 0.5))  # halves round up, toward keeping
    assert plan.k == pytest.approx(0.3) and abs(plan.achieved_err - 30) < 1.0


@pytest.mark.parametrize("err", [10.0, 35.0, 70.0])
def test_energy_keeps_the_smallest_rank_that_holds_k_of_the_energy(err: float) -> None:
    spectra = synthetic(4, SHAPES)
    plan = make_plan(spectra, PlanConfig(strategy="energy", err=err))
    assert abs(plan.achieved_err - err) < 0.5
    for l in plan.layers:
        s2 = spectra.values[l.name].astype(np.float64) ** 2
        kept = np.cumsum(s2) / s2.sum()
        assert l.rank == l.full_rank or kept[l.rank - 1] >= plan.k  # enough energy kept ...
        assert l.rank == 1 or kept[l.rank - 2] < plan.k  # ... by the smallest such rank


def test_energy_ties_keep_exactly_k() -> None:
    layer = LayerInfo("blocks.0.w", 0, "w", (4, 4), bias=False)
    spectra = Spectra("flat", "0" * 64, SpectraConfig(), [layer], {"blocks.0.w": np.ones(4, dtype=np.float32)}, 16)
    assert make_plan(spectra, PlanConfig(strategy="energy", err=None, k=0.5)).layers[0].rank == 2  # 50 % kept


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), err=st.floats(0, 95), strategy=st.sampled_from(["welore", "energy"]))
def test_replanning_at_the_reported_k_is_exact(seed: int, err: float, strategy: str) -> None:
    spectra = synthetic(seed, SHAPES)
    plan = make_plan(spectra, PlanConfig(strategy=strategy, err=err))
    again = make_plan(spectra, PlanConfig(strategy=strategy, err=None, k=plan.k))
    assert again.ranks() == plan.ranks()
    assert err_for_k(prepare_scores(spectra, strategy), plan.k) == pytest.approx(plan.achieved_err, abs=1e-9)


def test_ranks_never_drop_below_one_and_plan_from_ranks_validates() -> None:
    spectra = synthetic(5, SHAPES)
    plan = make_plan(spectra, PlanConfig(err=99.9))
    assert min(l.rank for l in plan.layers) == 1
    with pytest.raises(WeLoreError, match=r"blocks\.0\.w0: rank 0"):
        plan_from_ranks(spectra, {"blocks.0.w0": 0}, PlanConfig())


def test_paper_search_mode_reproduces_a_grid_k() -> None:
    plan = make_plan(synthetic(6, SHAPES), PlanConfig(err=30, search="paper"))
    assert plan.k is not None and abs(plan.k / 0.005 - round(plan.k / 0.005)) < 1e-9
    with pytest.raises(WeLoreError, match="defined for the welore strategy with a target ERR"):
        PlanConfig(strategy="energy", err=30, search="paper")


def test_scores_are_reusable_across_slider_moves() -> None:
    spectra = synthetic(7, SHAPES)
    scores = prepare_scores(spectra)
    for err in (5, 25, 60):
        assert make_plan(spectra, PlanConfig(err=err), scores).ranks() == make_plan(spectra, PlanConfig(err=err)).ranks()


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "random"}, "strategy"),
    ({"err": 100.0}, r"\[0, 100\)"),
    ({"err": 10.0, "k": 0.1}, "exactly one of err, k, params and size_mib"),
    ({"params": 10.0, "size_mib": 100.0}, "exactly one of err, k, params and size_mib"),
    ({"params": 100.0}, "params is a percentage of parameters removed"),
    ({"size_mib": 0.0}, "size_mib must be positive"),
    ({"strategy": "greedy", "k": 0.2}, "greedy strategy has no threshold k"),
    ({"err": None, "k": 1.5}, r"k must be in \[0, 1\]"),
    ({"min_ratio": -0.1}, "min_ratio"),
    ({"normalization": "l2"}, "normalization"),
    ({"search": "binary"}, "search"),
])
def test_bad_plan_config_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(WeLoreError, match=message):
        PlanConfig(**kwargs)  # type: ignore[arg-type]
