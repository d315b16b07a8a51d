"""welore_core: WeLore (arXiv 2407.11239) as a library — spectra, thresholds, rank plans, rank maps,
compression, perplexity evaluation, sweeps and the run registry.

The public API below is what the dashboard and the CLI use; nothing here imports streamlit.
"""
from __future__ import annotations

from .checkpoint import load_compressed, save_compressed
from .compress import CompressionConfig, CompressionReport, collect_grams, compress_model, count_parameters
from .dynamics import DynamicsConfig, build_model, default_folder, load_preset, presets, run_dynamics
from .dynamics_analysis import (DynamicsRun, EmergenceConfig, claim_check, cosine_matrix, emergence_over_time,
                                emergence_summary, gradient_cosine, gradient_cosines, gradient_vectors, load_run,
                                spectra_over_time)
from .downstream import TASKS as DOWNSTREAM_TASKS
from .downstream import load_task
from .errors import RankMapError, WeLoreError
from .finetune import MODES as FINETUNE_MODES
from .finetune import FinetuneConfig, Prepared, build_optimizer, prepare_model, state_bytes
from .finetune_run import run_finetune
from .evaluate import EvalConfig, EvalResult, load_corpus, perplexity, tokenize_corpus
from .experiments import (Calibration, compress_and_evaluate, evaluate_model, load_for_eval, sensitivity_of,
                          sensitivity_scan, sweep)
from .lowrank import LowRankLinear
from .registry import Registry
from .layers import LayerInfo, discover_from_names, discover_layers, find_blocks, select_layers
from .paths import cache_dir, data_dir
from .plan import (BYTES_PER_PARAM, STRATEGIES, LayerPlan, PlanConfig, RankPlan, Scores, err_for_k, make_plan,
                   plan_from_ranks, prepare_scores)
from .rankmap import (SCHEMA_ID, check_rankmap, missing_layers, plan_from_rankmap, rankmap_dict, read_rankmap,
                      save_rankmap)
from .sources import ModelSource, embedded_gguf, load_model, resolve_model
from .spectra import Spectra, SpectraConfig, compute_spectra, effective_rank, singular_values, stable_rank
from .summary import plan_by_type, plan_grid, spectra_by_type
from .threshold import NORMALIZATIONS, normalize, paper_threshold, solve_threshold

__version__ = "0.1.0"

__all__ = [
    "DOWNSTREAM_TASKS", "FINETUNE_MODES", "FinetuneConfig", "Prepared", "build_optimizer", "load_task", "prepare_model",
    "run_finetune", "state_bytes",
    "DynamicsConfig", "DynamicsRun", "EmergenceConfig", "build_model", "claim_check", "cosine_matrix", "default_folder",
    "emergence_over_time", "emergence_summary", "gradient_cosine", "gradient_cosines", "gradient_vectors", "load_preset",
    "load_run", "presets", "run_dynamics", "spectra_over_time",
    "Calibration", "CompressionConfig", "CompressionReport", "EvalConfig", "EvalResult", "LowRankLinear", "Registry",
    "collect_grams", "compress_and_evaluate", "compress_model", "count_parameters", "evaluate_model", "load_compressed", "load_corpus",
    "load_for_eval", "perplexity", "save_compressed", "sensitivity_of", "sensitivity_scan", "sweep", "tokenize_corpus",
    "BYTES_PER_PARAM", "LayerInfo", "LayerPlan", "ModelSource", "NORMALIZATIONS", "PlanConfig", "RankMapError",
    "RankPlan", "SCHEMA_ID", "STRATEGIES", "Scores", "Spectra", "SpectraConfig", "WeLoreError", "cache_dir",
    "check_rankmap", "compute_spectra", "data_dir", "discover_from_names", "discover_layers", "effective_rank", "err_for_k",
    "embedded_gguf", "find_blocks", "load_model", "make_plan", "missing_layers", "normalize", "paper_threshold", "plan_by_type",
    "plan_from_rankmap", "plan_from_ranks", "plan_grid", "prepare_scores", "rankmap_dict", "read_rankmap",
    "resolve_model", "save_rankmap", "select_layers", "singular_values", "solve_threshold", "spectra_by_type",
    "stable_rank",
]
