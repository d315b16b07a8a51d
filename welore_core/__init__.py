"""welore_core: WeLore (arXiv 2407.11239) as a library.

The parts, each a subpackage, with dependencies running one way (nothing here imports streamlit):

  utils/        paths, atomic files, devices, progress, the LR schedule
  models/       model IO: sources, GGUF, safetensors, layer discovery, loading (compressed folders and their
                LowRankLinear too), fingerprints, model info
  data/         corpora, tokens, windows, downstream tasks
  compression/  the paper in order: spectra/ → plan/ (threshold, ranks, rank map) → apply/ (factors, compress, folder)
  evaluation/   perplexity, runs and sweeps, sensitivity, the run registry, background jobs
  finetune/     LRC-only fine-tuning and its baselines (N-LRC, full, LoRA, GaLore)
  dynamics/     the gradient-dynamics lab (how low-rank weights emerge)
  figures/      every Plotly figure, one palette
  cli/          the `welore` command

This module is the public API: what the dashboard and users' scripts import.
"""
from __future__ import annotations

from . import figures
from .compression import (LRC_MIN_RATIO, STRATEGIES, Calibration, CompressionConfig, CompressionReport, PlanConfig,
                          RankPlan, Spectra, SpectraConfig, compress_streamed, compress_to, compute_spectra, make_plan,
                          plan_from_rankmap, plan_target, rankmap_dict, read_rankmap, save_compressed, save_rankmap)
from .compression.plan import (CALIBRATED, ERR_GRID, K_GRID, NORMALIZATIONS, THRESHOLD, UNCALIBRATED, PlanGrid,
                               PlanTotals, Scores, missing_layers, plan_by_type, plan_grid, prepare_scores)
from .compression.spectra import METHODS as SVD_METHODS
from .data import DATASETS, TASKS, Corpus, load_corpus, load_task, tokenize_corpus
from .dynamics import (DynamicsConfig, DynamicsRun, EmergenceConfig, RunFolder, build_model, claim_check, cosine_matrix,
                       default_folder, emergence_over_time, emergence_summary, gradient_cosine, gradient_cosines,
                       gradient_vectors, load_preset, load_run, presets, run_dynamics, spectra_over_time)
from .errors import RankMapError, WeLoreError
from .evaluation import (ORIGINS, EvalConfig, EvalResult, JobCancelled, JobState, JobStore, Registry,
                         ZeroShotConfig, chart_runs, compress_and_evaluate, evaluate_tasks, local_task_names,
                         measured_cost, measured_costs, SampleConfig, Samples, sample_from, side_by_side,
                         evaluate_model, load_for_eval, perplexity, perplexity_sweep, sensitivity_of, sensitivity_scan,
                         start_job, wait)
from .finetune import MODES as FINETUNE_MODES
from .finetune import (FinetuneConfig, FinetuneResult, Prepared, build_optimizer, describe_teacher, finetune_runs,
                       prepare_model, run_finetune, run_modes, runs_frame, state_bytes, with_ratios)
from .models import (SOURCE_KINDS, WEIGHT_DTYPES, LayerInfo, LowRankLinear, ModelInfo, ModelSource, count_parameters,
                     describe_model, discover_layers, expect_kind, guess_kind, load_model, resolve_model,
                     source_fingerprint)
from .utils import VERSION, Progress, cache_dir, data_dir

__version__ = VERSION

__all__ = [
    # compression: the paper's steps (spectra -> plan -> apply); more in welore_core.compression.{spectra,plan,apply}
    "CALIBRATED", "ERR_GRID", "K_GRID", "LRC_MIN_RATIO", "NORMALIZATIONS", "STRATEGIES", "SVD_METHODS", "THRESHOLD",
    "UNCALIBRATED",
    "Calibration", "CompressionConfig", "CompressionReport", "PlanConfig", "PlanGrid", "PlanTotals", "RankPlan",
    "Scores", "Spectra", "SpectraConfig", "compress_streamed", "compress_to", "compute_spectra", "make_plan",
    "missing_layers", "plan_by_type", "plan_from_rankmap", "plan_grid", "plan_target", "prepare_scores",
    "rankmap_dict", "read_rankmap", "save_compressed", "save_rankmap",
    # models and data
    "SOURCE_KINDS", "WEIGHT_DTYPES", "LayerInfo", "LowRankLinear", "ModelInfo", "ModelSource", "count_parameters",
    "describe_model", "discover_layers", "expect_kind", "guess_kind", "load_model", "resolve_model",
    "source_fingerprint", "DATASETS", "TASKS", "Corpus", "load_corpus", "load_task", "tokenize_corpus",
    # evaluation, registry, jobs
    "ORIGINS", "EvalConfig", "EvalResult", "JobCancelled", "JobState", "JobStore", "Registry", "ZeroShotConfig",
    "chart_runs", "compress_and_evaluate", "evaluate_tasks", "local_task_names", "measured_cost", "measured_costs",
    "SampleConfig", "Samples", "sample_from", "side_by_side",
    "evaluate_model", "load_for_eval", "perplexity", "perplexity_sweep", "sensitivity_of", "sensitivity_scan",
    "start_job", "wait",
    # fine-tuning
    "FINETUNE_MODES", "FinetuneConfig", "FinetuneResult", "Prepared", "build_optimizer", "describe_teacher",
    "finetune_runs",
    "prepare_model", "run_finetune", "run_modes", "runs_frame", "state_bytes", "with_ratios",
    # dynamics
    "DynamicsConfig", "DynamicsRun", "EmergenceConfig", "RunFolder", "build_model", "claim_check", "cosine_matrix",
    "default_folder", "emergence_over_time", "emergence_summary", "gradient_cosine", "gradient_cosines",
    "gradient_vectors", "load_preset", "load_run", "presets", "run_dynamics", "spectra_over_time",
    # the rest
    "Progress", "RankMapError", "VERSION", "WeLoreError", "cache_dir", "data_dir", "figures",
]
