"""Compression: WeLore (arXiv 2407.11239) in the paper's order, one subpackage a step.

1. `spectra/`  singular values of every linear weight in the blocks, streamed and cached per layer; the
               calibration statistics, whitened values σ(W·L) and output Fisher of the data-aware options
2. `plan/`     per-layer normalisation and the rank rule r = #(normalised s ≥ k) with k solved for the target
               ERR (`threshold`), the baselines and budgets (`budget`, `greedy`), the plan and its LRC / N-LRC
               partition (`allocate`), totals, the explorer's grid of plans, summaries, and the rank map: the
               plan serialised (`rankmap`), the one form every compression target takes (`target`)
3. `apply/`    the factors A = U_r √S_r, B = √S_r V_rᵀ (`factors`; weight SVD or ActSVD), applied to a model in
               memory (`compress`) or to a checkpoint tensor by tensor (`stream`), and the folder written
               (`folder`)
Imports run spectra → plan → apply, never back. The low-rank layer itself and loading compressed folders are
model IO (`welore_core.models`); fine-tuning the LRCs is `welore_core.finetune`.
"""
from __future__ import annotations

from .apply import CompressionConfig, CompressionReport, compress_streamed, compress_to, save_compressed
from .plan import (LRC_MIN_RATIO, STRATEGIES, PlanConfig, RankPlan, make_plan, plan_from_rankmap, plan_target,
                   rankmap_dict, read_rankmap, save_rankmap)
from .spectra import Calibration, Spectra, SpectraConfig, compute_spectra

__all__ = ["CompressionConfig", "CompressionReport", "compress_streamed", "compress_to", "save_compressed",
           "LRC_MIN_RATIO", "STRATEGIES", "PlanConfig", "RankPlan", "make_plan", "plan_from_rankmap", "plan_target",
           "rankmap_dict", "read_rankmap", "save_rankmap",
           "Calibration", "Spectra", "SpectraConfig", "compute_spectra"]
