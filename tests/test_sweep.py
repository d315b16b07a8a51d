"""Plans along an axis (the dashboard explorer's grid): every point is make_plan's plan at that target, and the
greedy ERR budgets, taken as prefixes of one order, stay the allocation that drops the least energy."""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from test_budget import synthetic

import welore_core as wc
from welore_core.compression.plan import greedy_err_ranks, plan_from_ranks, truncation_loss


def with_bias(spectra: wc.Spectra) -> wc.Spectra:
    """The same spectra with every other layer carrying a bias (its parameters count in every total)."""
    layers = [replace(l, bias=i % 2 == 0) for i, l in enumerate(spectra.layers)]
    return replace(spectra, layers=layers, total_params=spectra.total_params + sum(l.shape[0] for l in layers[::2]))


@pytest.mark.parametrize(("strategy", "normalization", "axis", "min_ratio"), [
    ("welore", "minmax", "err", 0.4), ("welore", "minmax", "k", 0.5), ("welore", "max", "err", 0.0),
    ("energy", "minmax", "err", 1.0), ("energy", "minmax", "k", 0.4), ("uniform", "minmax", "err", 0.5),
    ("greedy", "minmax", "err", 0.4)])
def test_every_point_of_a_sweep_is_the_plan_make_plan_makes(strategy: str, normalization: str, axis: str,
                                                            min_ratio: float) -> None:
    spectra = with_bias(synthetic(3, blocks=4))
    config = wc.PlanConfig(strategy=strategy, normalization=normalization, min_ratio=min_ratio)
    sweep = wc.plan_grid(spectra, config, axis)
    assert sweep.targets == (wc.ERR_GRID if axis == "err" else wc.K_GRID)
    assert sweep.ranks.shape == (len(sweep.targets), len(spectra.layers))
    for i, target in enumerate(sweep.targets):
        plan = wc.make_plan(spectra, replace(config, **{"err": None, axis: target}))
        assert sweep.totals[i] == plan.totals, target
        assert sweep.ranks[i].tolist() == [l.rank for l in plan.layers]
        assert sweep.lrc[i].tolist() == [l.lrc for l in plan.layers]
        assert sweep.k[i] == plan.k
        if i % 50 == 0:  # a row of the grid as a RankPlan: the same plan, layer by layer
            ranks = dict(zip((l.name for l in spectra.layers), sweep.ranks[i].tolist()))
            again = plan_from_ranks(spectra, ranks, replace(config, **{"err": None, axis: target}), k=sweep.k[i])
            assert (again.layers, again.totals, again.k, again.config) == (plan.layers, plan.totals, plan.k, plan.config)
    err = np.array([t.achieved_err for t in sweep.totals])
    assert (np.diff(err) >= 0).all() if axis == "err" or strategy != "energy" else (np.diff(err) <= 0).all()


def test_a_sweep_refuses_what_make_plan_would() -> None:
    spectra = synthetic(0)
    with pytest.raises(wc.WeLoreError, match="Fisher-weighted spectra"):
        wc.plan_grid(spectra, wc.PlanConfig(strategy="fisher"), "err")
    with pytest.raises(wc.WeLoreError, match="no threshold k"):
        wc.plan_grid(spectra, wc.PlanConfig(strategy="greedy"), "k")
    with pytest.raises(wc.WeLoreError, match="axis"):
        wc.plan_grid(spectra, wc.PlanConfig(), "params")
    with pytest.raises(wc.WeLoreError, match="err is a percentage"):
        wc.plan_grid(spectra, wc.PlanConfig(), "err", targets=[10.0, 100.0])
    with pytest.raises(wc.WeLoreError, match="at least one"):
        wc.plan_grid(spectra, wc.PlanConfig(), "err", targets=[])
    assert wc.plan_grid(spectra, wc.PlanConfig(), "err", targets=[12.5]).nearest(12.4) == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_err_budgets_drop_the_least_energy_of_any_allocation(seed: int) -> None:
    """Equal costs make the greedy optimal: no allocation keeping as many ranks drops less (brute force)."""
    shapes = [(6, 5), (5, 5), (7, 4)]
    spectra = synthetic(seed, shapes, blocks=1)
    layers, full = spectra.layers, [l.full_rank for l in spectra.layers]
    errs = [0.0, 20.0, 40.0, 60.0, 80.0]
    ranks = greedy_err_ranks(layers, spectra.values, errs)
    for err, row in zip(errs, ranks):
        budget = int(np.floor((1 - err / 100) * sum(full)))
        assert row.sum() == max(budget, len(layers))
        best = min(truncation_loss(layers, spectra.values, r)
                   for r in itertools.product(*(range(1, f + 1) for f in full)) if sum(r) == row.sum())
        assert truncation_loss(layers, spectra.values, row) == pytest.approx(best, abs=1e-12)
    assert (np.diff(ranks, axis=0) <= 0).all()  # a smaller budget never gives a layer more rank


def test_greedy_err_ranks_follow_layer_weights() -> None:
    spectra = synthetic(2, blocks=2)
    first = spectra.layers[0].name
    plain = greedy_err_ranks(spectra.layers, spectra.values, [50.0])[0]
    heavy = greedy_err_ranks(spectra.layers, spectra.values, [50.0], weights={first: 100.0})[0]
    assert heavy[0] > plain[0] and heavy.sum() == plain.sum()


def one_increment_at_a_time(spectra: wc.Spectra, err: float, weights: dict[str, float]) -> list[int]:
    """Reference greedy, written plainly: from rank 1 everywhere, give one more rank to the layer whose next
    singular value holds the largest weighted share of its energy (ties: the first layer), while the budget lasts."""
    shares = {l.name: weights.get(l.name, 1.0) * spectra.values[l.name].astype(np.float64) ** 2
              / float((spectra.values[l.name].astype(np.float64) ** 2).sum()) for l in spectra.layers}
    ranks = [1] * len(spectra.layers)
    budget = int(np.floor((1 - err / 100) * sum(l.full_rank for l in spectra.layers)))
    while sum(ranks) < budget:
        gains = [shares[l.name][r] if r < l.full_rank else -np.inf for l, r in zip(spectra.layers, ranks)]
        ranks[int(np.argmax(gains))] += 1
    return ranks


def test_greedy_err_ranks_equal_a_plain_one_increment_greedy() -> None:
    spectra = synthetic(4, blocks=2)
    weights = {l.name: 1.0 + (i % 3) for i, l in enumerate(spectra.layers)}
    errs = [0.0, 12.5, 50.0, 87.5, 99.0]
    ranks = greedy_err_ranks(spectra.layers, spectra.values, errs, weights)
    for err, row in zip(errs, ranks):
        assert row.tolist() == one_increment_at_a_time(spectra, err, weights), err


def test_greedy_on_no_layers_is_an_empty_plan() -> None:
    empty = wc.Spectra("none", "0" * 64, wc.SpectraConfig(use_cache=False), [], {}, 10)
    assert greedy_err_ranks([], {}, [10.0, 50.0]).shape == (2, 0)
    plan = wc.make_plan(empty, wc.PlanConfig(strategy="greedy", err=30.0))
    assert plan.layers == [] and plan.totals.params_compressed == 10
