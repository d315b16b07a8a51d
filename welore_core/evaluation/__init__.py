"""Evaluation: perplexity at the paper's protocol, runs of compressed models (one identity, one registry
row each), strategy sweeps, per-layer sensitivity scans, background jobs for the dashboard, and what a model
writes: greedy continuations and sampled calibration text."""
from __future__ import annotations

from .attribution import (ORIGINS, chart_runs, folder_plan_hash, measured_cost, measured_costs,
                          plan_hash, source_fields)
from .generate import Continuation, generate, generate_from, side_by_side
from .jobs import FINAL, JobCancelled, JobFn, JobState, JobStore, start_job, wait
from .perplexity import EvalConfig, EvalResult, perplexity
from .registry import Registry, run_key
from .runs import (Loaded, card_measurements, compress_and_evaluate, eval_identity, evaluate_model, evaluate_point, point_tasks,
                   load_for_eval, token_ids)
from .samples import SampleConfig, Samples, default_samples_path, sample_batch, sample_from, write_samples
from .sensitivity import GROUPINGS, check_scan, sensitivity_of, sensitivity_scan
from .sweep import perplexity_sweep
from .zeroshot import ZeroShotConfig, evaluate_tasks, local_task_names

__all__ = ["Continuation", "generate", "generate_from", "side_by_side", "SampleConfig", "Samples", "default_samples_path",
           "sample_batch", "sample_from", "write_samples",
           "FINAL", "GROUPINGS", "ORIGINS", "ZeroShotConfig", "evaluate_tasks", "local_task_names", "chart_runs",
           "card_measurements", "measured_cost", "measured_costs", "source_fields", "EvalConfig", "EvalResult",
           "JobCancelled", "JobFn", "JobState",
           "JobStore", "Loaded", "Registry", "check_scan", "compress_and_evaluate", "eval_identity",
           "evaluate_model", "evaluate_point", "folder_plan_hash", "load_for_eval", "perplexity", "plan_hash",
           "run_key", "sensitivity_of", "sensitivity_scan", "start_job", "perplexity_sweep", "point_tasks",
           "token_ids", "wait"]
