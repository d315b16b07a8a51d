"""welore_core: WeLore (arXiv 2407.11239) as a library.

The parts, each a subpackage, with dependencies running one way (nothing here imports streamlit):

  utils/        paths, atomic files, devices, progress, the LR schedule
  models/       model IO: sources, GGUF, safetensors, layer discovery, loading, fingerprints, model info
  data/         corpora, tokens, windows, downstream tasks
  compression/  the paper in order: spectra → threshold → plan → rank map → low-rank layer → compress → folder
  evaluation/   perplexity, runs and sweeps, sensitivity, the run registry, background jobs
  finetune/     LRC-only fine-tuning and its baselines (N-LRC, full, LoRA, GaLore)
  dynamics/     the gradient-dynamics lab (how low-rank weights emerge)
  figures/      every Plotly figure, one palette
  cli/          the `welore` command

This module is the public API: what the dashboard and users' scripts import.
"""
from __future__ import annotations

from . import figures
from .compression import (BYTES_PER_PARAM, CALIBRATED, LRC_MIN_RATIO, NORMALIZATIONS, SCHEMA_ID, STRATEGIES, Calibration,
                          CompressionConfig, CompressionReport, LayerPlan, LowRankLinear, PlanConfig, PlanTotals,
                          RankPlan, Scores, Spectra, SpectraConfig, Target, calibration_batches, check_rankmap,
                          collect_grams, compress_to, compute_spectra, effective_rank, err_for_k, load_compressed,
                          load_model, make_plan, missing_layers, normalize, paper_threshold, plan_by_type,
                          plan_from_rankmap, plan_from_ranks, plan_grid, plan_sweep, plan_target, prepare_scores,
                          rank_at_k, ERR_GRID, K_GRID, THRESHOLD, PlanSweep, sweep_plan,
                          rankmap_dict, read_rankmap, save_compressed, save_rankmap, singular_values, solve_threshold,
                          spectra_by_type, stable_rank)
from .compression.svd import METHODS as SVD_METHODS
from .data import DATASETS, TASKS, Corpus, load_corpus, load_task, tokenize_corpus
from .dynamics import (DynamicsConfig, DynamicsRun, EmergenceConfig, RunFolder, build_model, claim_check,
                       cosine_matrix, default_folder, emergence_over_time, emergence_summary, gradient_cosine,
                       gradient_cosines, gradient_vectors, load_preset, load_run, presets, run_dynamics,
                       spectra_over_time)
from .errors import RankMapError, WeLoreError
from .evaluation import (EvalConfig, EvalResult, JobCancelled, JobState, JobStore, Registry, compress_and_evaluate,
                         evaluate_model, load_for_eval, perplexity, sensitivity_of, sensitivity_scan, start_job,
                         sweep, wait)
from .finetune import (MODES as FINETUNE_MODES, FinetuneConfig, FinetuneResult, Prepared, build_optimizer,
                       finetune_runs, prepare_model, run_finetune, run_modes, runs_frame, state_bytes, with_ratios)
from .models import (SOURCE_KINDS, LayerInfo, ModelInfo, ModelSource, count_parameters, describe_model,
                     discover_from_names, discover_layers, embedded_gguf, expect_kind, find_blocks, guess_kind,
                     WEIGHT_DTYPES, resolve_model, select_layers, source_fingerprint)
from .utils import VERSION, Progress, cache_dir, data_dir

__version__ = VERSION
DOWNSTREAM_TASKS = TASKS

__all__ = [
    # compression: the paper's pipeline
    "BYTES_PER_PARAM", "CALIBRATED", "LRC_MIN_RATIO", "NORMALIZATIONS", "SCHEMA_ID", "STRATEGIES", "Calibration",
    "CompressionConfig", "CompressionReport", "LayerPlan", "LowRankLinear", "PlanConfig", "PlanTotals", "RankPlan",
    "Scores", "Spectra", "SpectraConfig", "Target", "calibration_batches", "check_rankmap", "collect_grams",
    "compress_to", "compute_spectra", "effective_rank", "err_for_k", "load_compressed", "load_model", "make_plan",
    "missing_layers", "normalize", "paper_threshold", "plan_by_type", "plan_from_rankmap", "plan_from_ranks",
    "plan_grid", "plan_sweep", "sweep_plan", "PlanSweep", "ERR_GRID", "K_GRID", "THRESHOLD", "plan_target", "prepare_scores", "rank_at_k", "rankmap_dict", "read_rankmap", "save_compressed",
    "save_rankmap", "singular_values", "solve_threshold", "spectra_by_type", "stable_rank", "SVD_METHODS",
    # models and data
    "SOURCE_KINDS", "LayerInfo", "ModelInfo", "ModelSource", "count_parameters", "describe_model",
    "discover_from_names", "discover_layers", "embedded_gguf", "expect_kind", "find_blocks", "guess_kind",
    "resolve_model", "select_layers", "source_fingerprint", "WEIGHT_DTYPES",
    "DATASETS", "DOWNSTREAM_TASKS", "TASKS", "Corpus", "load_corpus", "load_task", "tokenize_corpus",
    # evaluation, registry, jobs
    "EvalConfig", "EvalResult", "JobCancelled", "JobState", "JobStore", "Registry", "compress_and_evaluate",
    "evaluate_model", "load_for_eval", "perplexity", "sensitivity_of", "sensitivity_scan", "start_job", "sweep", "wait",
    # fine-tuning
    "FINETUNE_MODES", "FinetuneConfig", "FinetuneResult", "Prepared", "build_optimizer", "finetune_runs",
    "prepare_model", "run_finetune", "run_modes", "runs_frame", "state_bytes", "with_ratios",
    # dynamics
    "DynamicsConfig", "DynamicsRun", "EmergenceConfig", "RunFolder", "build_model", "claim_check", "cosine_matrix",
    "default_folder", "emergence_over_time", "emergence_summary", "gradient_cosine", "gradient_cosines",
    "gradient_vectors", "load_preset", "load_run", "presets", "run_dynamics", "spectra_over_time",
    # the rest
    "Progress", "RankMapError", "VERSION", "WeLoreError", "cache_dir", "data_dir", "figures",
]
