"""Step 2: from spectra to a rank plan. The rank rule r = #(normalised s ≥ k) and k solved for a target ERR
(`threshold`); parameter and size budgets and the peers' uniform baseline (`budget`); greedy allocation by loss
per parameter (`greedy`); the plan, its strategies and its LRC / N-LRC partition (`allocate`); the arithmetic
from ranks to a plan's numbers (`totals`); a strategy's plans at every point of an ERR or k grid (`grid`, the
dashboard's explorer); per-type and per-block tables (`summary`); the rank map, the plan as JSON (`rankmap`);
and the one form every compression target takes (`target`)."""
from __future__ import annotations

from .allocate import (CALIBRATED, DATA_AWARE, GREEDY, LRC_MIN_RATIO, STRATEGIES, THRESHOLD, UNCALIBRATED, LayerPlan,
                       PlanConfig, RankPlan, Scores, allocate_ranks, energy_tail, err_for_k, make_plan, plan_from_ranks,
                       prepare_scores)
from .budget import BYTES, kept_params, removed_pct, uniform_param_ranks
from .greedy import greedy_err_ranks, greedy_ranks, sensitivity_weights, truncation_loss
from .grid import ERR_GRID, K_GRID, PlanGrid, plan_grid
from .rankmap import (SCHEMA_ID, check_rankmap, custom_rankmap, fingerprint_note, missing_layers, plan_from_rankmap,
                      rankmap_dict, rankmap_schema, read_rankmap, save_rankmap)
from .summary import block_table, plan_by_type, spectra_by_type
from .target import Target, as_rankmap, plan_target, target_ranks
from .threshold import (NORMALIZATIONS, count_below, energy_share, kept_rank, normalize, paper_threshold, ranks_at,
                        solve_threshold, solve_threshold_below)
from .totals import PlanTotals, RankTable

__all__ = ["BYTES", "CALIBRATED", "DATA_AWARE", "ERR_GRID", "GREEDY", "K_GRID", "LRC_MIN_RATIO", "NORMALIZATIONS",
           "SCHEMA_ID", "STRATEGIES", "THRESHOLD", "UNCALIBRATED", "LayerPlan", "PlanConfig", "PlanGrid",
           "PlanTotals", "RankPlan", "RankTable", "Scores", "Target", "allocate_ranks", "as_rankmap", "block_table",
           "check_rankmap", "count_below", "custom_rankmap", "energy_share", "energy_tail", "err_for_k",
           "fingerprint_note", "greedy_err_ranks", "greedy_ranks", "kept_params", "kept_rank", "make_plan",
           "missing_layers", "normalize", "paper_threshold", "plan_by_type", "plan_from_rankmap", "plan_from_ranks",
           "plan_grid", "plan_target", "prepare_scores", "rankmap_dict", "rankmap_schema", "ranks_at",
           "read_rankmap", "removed_pct", "save_rankmap", "sensitivity_weights", "solve_threshold",
           "solve_threshold_below", "spectra_by_type", "target_ranks", "truncation_loss", "uniform_param_ranks"]
