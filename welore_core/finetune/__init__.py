"""Fine-tuning a compressed model: WeLore's LRC-only mode (arXiv 2407.11239 §4) beside N-LRC, full, LoRA and
GaLore, on one accelerate loop with resumable checkpoints.

`config` the run's settings; `modes` which parameters train and the optimizer; `batches` training data and
measurements; `loop` the accelerate loop; `folders` output and checkpoints; `run` a run end to end;
`result` what it reports; `report` runs side by side; `distill` the teacher and the KL loss of --distill.
"""
from __future__ import annotations

from .config import MODES, PRECISIONS, SCHEDULERS, FinetuneConfig
from .distill import describe_teacher
from .modes import Prepared, build_optimizer, build_scheduler, lrc_names, nlrc_names, prepare_model, state_bytes
from .report import finetune_runs, runs_frame, with_ratios
from .result import FinetuneResult
from .run import run_finetune, run_modes

__all__ = ["MODES", "PRECISIONS", "SCHEDULERS", "FinetuneConfig", "FinetuneResult", "Prepared", "build_optimizer",
           "describe_teacher",
           "build_scheduler", "finetune_runs", "lrc_names", "nlrc_names", "prepare_model", "run_finetune", "run_modes",
           "runs_frame", "state_bytes", "with_ratios"]
