"""The global threshold: exact solve equals brute force; normalisations; the paper's linear search."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from welore_core import WeLoreError
from welore_core.compression.plan import count_below, normalize, paper_threshold, solve_threshold, solve_threshold_below


def brute_force(values: np.ndarray, err: float) -> float:
    """Try every pooled value as k; keep the one whose removed count is closest to the target (smaller k on ties)."""
    target = err * values.size
    best: tuple[float, float] | None = None
    for u in np.unique(values):
        distance = abs(int(np.sum(values < u)) - target)
        if best is None or distance < best[0]:
            best = (distance, float(u))
    assert best is not None
    return best[1]


scores = st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.25, 0.5, 1.0])), min_size=1, max_size=300)


@settings(max_examples=400, deadline=None)
@given(values=scores, err=st.floats(0, 1, exclude_max=True))
def test_exact_threshold_equals_brute_force(values: list[float], err: float) -> None:
    pooled = np.sort(np.array(values))
    assert solve_threshold(pooled, err) == brute_force(pooled, err)


def brute_force_below(values: np.ndarray, err: float) -> float:
    """Keep-while-below mirror: candidates are the values and 1.0; closest removed count, larger k on ties."""
    target = err * values.size
    best: tuple[float, float] | None = None
    for u in sorted(set(np.unique(values).tolist()) | {1.0}, reverse=True):
        distance = abs(int(np.sum(values >= u)) - target)
        if best is None or distance < best[0]:
            best = (distance, float(u))
    assert best is not None
    return best[1]


@settings(max_examples=400, deadline=None)
@given(values=scores, err=st.floats(0, 1, exclude_max=True))
def test_keep_below_threshold_equals_brute_force(values: list[float], err: float) -> None:
    pooled = np.sort(np.array(values))
    k = solve_threshold_below(pooled, err)
    expected = brute_force_below(pooled, err)
    # same removed count (when max == 1.0, k = 1.0 and k = max coincide)
    assert int(np.sum(pooled >= k)) == int(np.sum(pooled >= expected))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 2000), err=st.floats(0, 1, exclude_max=True), seed=st.integers(0, 2**16))
def test_distinct_values_hit_the_target_to_one_value(n: int, err: float, seed: int) -> None:
    pooled = np.sort(np.random.default_rng(seed).random(n))
    k = solve_threshold(pooled, err)
    # a threshold at or below the largest value always keeps it: at most n - 1 can go
    assert abs(count_below(pooled, k) - min(err * n, n - 1)) <= 0.5


def test_minmax_and_max_normalisation() -> None:
    s = np.array([10.0, 4.0, 2.0])
    np.testing.assert_allclose(normalize(s, "minmax"), [1.0, 0.25, 0.0])
    np.testing.assert_allclose(normalize(s, "max"), [1.0, 0.4, 0.2])
    np.testing.assert_array_equal(normalize(np.full(4, 3.0)), np.ones(4))  # flat spectrum: nothing to cut
    np.testing.assert_array_equal(normalize(np.zeros(3), "max"), np.ones(3))
    with pytest.raises(WeLoreError, match="normalization"):
        normalize(s, "zscore")


def test_solve_rejects_out_of_range_targets() -> None:
    with pytest.raises(WeLoreError, match=r"\[0, 100\)"):
        solve_threshold(np.array([0.0, 1.0]), 1.0)
    with pytest.raises(WeLoreError, match="zero"):
        solve_threshold(np.array([]), 0.3)


def test_paper_search_walks_a_grid_of_0_005() -> None:
    rng = np.random.default_rng(0)
    layers = [np.sort(normalize(np.sort(rng.pareto(2.0, 300))[::-1])) for _ in range(12)]
    pooled = np.sort(np.concatenate(layers))
    for err in (0.1, 0.3, 0.5):
        k = paper_threshold(layers, err)
        assert abs(k / 0.005 - round(k / 0.005)) < 1e-9
        frac = count_below(pooled, k) / pooled.size
        previous = count_below(pooled, k - 0.005) / pooled.size
        assert abs(frac - err) < 0.005 or (frac >= err and previous < err - 0.005)
        # the exact solve lands at least as close to the target as the grid does
        exact = solve_threshold(pooled, err)
        assert abs(count_below(pooled, exact) / pooled.size - err) <= abs(frac - err)


def test_keep_below_ties_are_decided_on_the_removed_count() -> None:
    """0.9 of 5 scores is 4.5 removed: 4 and 5 tie and the larger k (more kept) wins; computed as (1 - 0.9) * 5
    kept, the float 0.4999… would break the tie the other way (hypothesis found it)."""
    pooled = np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    k = solve_threshold_below(pooled, 0.9)
    assert k == brute_force_below(pooled, 0.9) == 1.0 and int(np.sum(pooled >= k)) == 4
