"""The gradient-dynamics lab: the observation side of WeLore (arXiv 2407.11239 §2). Pretrain a small LLaMA
and record, per layer, whether its gradients keep changing and its weights become low-rank.

`config` settings and presets; `train` the resumable run; `record` what one checkpoint records; `folder`
the run folder's files; `analysis` pure functions from the records to arrays and tables.
"""
from __future__ import annotations

from .analysis import (GRAD_SOURCES, DynamicsRun, EmergenceConfig, claim_check, cosine_matrix, emergence_over_time,
                       emergence_summary, gradient_cosine, gradient_cosines, gradient_vectors, load_run,
                       spectra_over_time)
from .config import DynamicsConfig, build_model, default_folder, load_preset, presets
from .folder import RunFolder
from .record import count_sketch, record_checkpoint, sketch_seed
from .train import run_dynamics

__all__ = ["GRAD_SOURCES", "DynamicsConfig", "DynamicsRun", "EmergenceConfig", "RunFolder", "build_model",
           "claim_check", "cosine_matrix", "count_sketch", "default_folder", "emergence_over_time", "emergence_summary",
           "gradient_cosine", "gradient_cosines", "gradient_vectors", "load_preset", "load_run", "presets",
           "record_checkpoint", "run_dynamics", "sketch_seed", "spectra_over_time"]
