"""Compression: WeLore (arXiv 2407.11239) in the paper's order.

1. `spectra`        singular values of every linear weight in the blocks (streamed, cached: `spectra_cache`)
2. `threshold`      per-layer min-max normalisation, the rank rule r = #(normalised s >= k), and k solved
                    so that the pooled fraction below it is the target ERR
3. `plan`           ranks of every layer and the LRC / N-LRC partition (with the uniform and energy
                    baselines), for an ERR, a k, or a parameter / size budget (`budget`); data-aware
                    allocations on whitened spectra (`whitened`, `greedy`; `fisher` weighs them by the loss's
                    output Fisher); `summary` tables of a plan;
                    `rankmap` the plan as JSON (+ `schemas/`); `totals` the arithmetic from ranks to a plan's
                    numbers; `sweep` the plans at every point of an ERR or
                    k grid at once (the dashboard's in-browser explorer)
4. `lowrank`        the low-rank layer W = A·B, A = U_r √S_r, B = √S_r V_rᵀ
5. `compress`       applies a plan to a model (`compress_to`); `stream` to a checkpoint, tensor by tensor;
                    `actsvd` the activation-whitened factors
6. `folder`         compressed-model folders, saved and loaded back without any SVD
Fine-tuning the LRCs is `welore_core.finetune`.
"""
from __future__ import annotations

from .actsvd import Calibration, calibration_batches, collect_grams, whitened_factors
from .compress import (MODES, CompressionConfig, LayerTarget, Target, compress_to, factor_layer, layer_targets,
                       plan_target, target_ranks, truncate_layer)
from .folder import (FORMAT, CompressionReport, is_compressed_folder, load_compressed, load_model, read_manifest,
                     read_report, save_compressed)
from .lowrank import LowRankLinear, svd_factors, truncate_weight
from .plan import (CALIBRATED, DATA_AWARE, GREEDY, LRC_MIN_RATIO, STRATEGIES, THRESHOLD, LayerPlan, PlanConfig, RankPlan, Scores,
                   allocate_ranks, err_for_k, make_plan, plan_from_ranks, plan_totals, prepare_scores)
from .totals import BYTES_PER_PARAM, PlanTotals, RankTable
from .sweep import ERR_GRID, K_GRID, PlanSweep, plan_sweep, sweep_plan
from .rankmap import (SCHEMA_ID, check_rankmap, custom_rankmap, missing_layers, plan_from_rankmap, rankmap_dict,
                      rankmap_schema, read_rankmap, save_rankmap)
from .stream import compress_streamed, streamable
from .spectra import Spectra, SpectraConfig, compute_spectra, effective_rank, singular_values, stable_rank
from .summary import plan_by_type, plan_grid, spectra_by_type
from .budget import kept_params, removed_pct, uniform_param_ranks
from .greedy import greedy_err_ranks, greedy_ranks, sensitivity_weights, truncation_loss
from .fisher import fisher_spectra, output_fisher
from .whitened import calibrated_fisher, calibrated_spectra, whitened_spectra, whitened_values
from .threshold import (NORMALIZATIONS, count_below, kept_rank, normalize, paper_threshold, rank_at_k,
                        solve_threshold, solve_threshold_below)

__all__ = ["ERR_GRID", "K_GRID", "THRESHOLD", "PlanSweep", "RankTable", "allocate_ranks", "greedy_err_ranks", "plan_sweep", "sweep_plan",
           "BYTES_PER_PARAM", "CALIBRATED", "DATA_AWARE", "GREEDY", "FORMAT", "LRC_MIN_RATIO", "MODES", "NORMALIZATIONS", "SCHEMA_ID", "STRATEGIES",
           "Calibration", "CompressionConfig", "CompressionReport", "LayerPlan", "LayerTarget", "LowRankLinear",
           "PlanConfig", "PlanTotals", "RankPlan", "Scores", "Spectra", "SpectraConfig", "Target",
           "calibrated_fisher", "calibrated_spectra", "fisher_spectra", "output_fisher", "calibration_batches", "greedy_ranks", "kept_params", "removed_pct",
           "sensitivity_weights", "truncation_loss", "uniform_param_ranks", "whitened_spectra", "whitened_values", "check_rankmap", "collect_grams", "compress_streamed", "compress_to", "compute_spectra", "count_below",
           "custom_rankmap", "effective_rank", "err_for_k", "factor_layer", "is_compressed_folder", "kept_rank",
           "layer_targets", "load_compressed", "load_model", "make_plan", "missing_layers", "normalize",
           "paper_threshold", "plan_by_type", "plan_from_rankmap", "plan_from_ranks", "plan_grid", "plan_target",
           "plan_totals", "prepare_scores", "rank_at_k", "rankmap_dict", "rankmap_schema", "read_manifest",
           "read_report", "read_rankmap", "save_compressed", "save_rankmap", "singular_values", "solve_threshold",
           "solve_threshold_below", "spectra_by_type", "stable_rank", "streamable", "svd_factors", "target_ranks",
           "truncate_layer", "truncate_weight", "whitened_factors"]
