"""Everything the dashboard remembers, in one place: the settings taken from the environment (one dataclass, one
default each), the session keys that more than one module reads or writes, and the URL's query parameters.

A widget key used by one page alone stays on that page; a key another module reads is named here, so a rename
cannot leave a reader behind.
"""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass, fields
from typing import Any, Mapping

import welore_core as wc


@dataclass(frozen=True)
class Settings:
    """Defaults the pages start from, each overridable by `WELORE_<FIELD>` (tests and `make run` set them)."""

    model: str = ""  # the model picked at start: "" = the embedded SmolLM2 (also the CLI's MODEL syntax)
    eval_data: str = "wikitext2"  # the Compress & evaluate and Sensitivity pages' corpus
    eval_tokens: int = 8192  # Compress & evaluate: tokens scored per run
    eval_seqlen: int = 512  # window length of both pages
    sensitivity_tokens: int = 4096  # Sensitivity: tokens per group (one evaluation per layer type or layer)
    task_limit: int = 0  # Compress & evaluate: examples per zero-shot task (0 = the whole split)
    ft_data: str = ""  # Fine-tune: training text ("" = tinyshakespeare under $WELORE_DATA)
    ft_steps: int = 20
    ft_seqlen: int = 128
    ft_out: str = "out/finetune"
    dynamics_run: str = ""  # Gradient dynamics: a run folder shown first
    dynamics_preset: str = "small"
    dynamics_steps: int = 0  # 0 = the preset's
    dynamics_every: int = 0  # 0 = the preset's
    dynamics_data: str = "tinyshakespeare"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings with every `WELORE_<FIELD>` of `env` (default: os.environ) applied; a value of the wrong
        type is refused naming the variable."""
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"WELORE_{f.name.upper()}"
            if name in env:
                try:
                    values[f.name] = hints[f.name](env[name])
                except ValueError:
                    raise wc.WeLoreError(f"${name} must be {hints[f.name].__name__}, got {env[name]!r}") from None
        settings = cls(**values)
        if not settings.ft_data:
            settings = cls(**{**values, "ft_data": str(wc.data_dir() / "tinyshakespeare" / "input.txt")})
        return settings


def settings() -> Settings:
    """The settings now (read on every run: cheap, and tests change the environment between runs)."""
    return Settings.from_env()


class Keys:
    """Session-state keys shared between modules."""

    SOURCE_KIND = "source_kind"  # the sidebar's model picker (entry-point widgets: alive on every page)
    SOURCE_PATH = "source_path"
    DEVICE = "device"
    WEIGHTS_DTYPE = "weights_dtype"
    SVD_DTYPE = "svd_dtype"
    SVD_METHOD = "svd_method"
    STRATEGY = "strategy"  # the rank plan: its settings, and the target that drives it
    NORMALIZATION = "normalization"
    MIN_RATIO = "min_ratio"
    DRIVER = "driver"  # "err", "k" or "params": the slider moved last decides the plan, the others follow
    ERR = "err"
    K = "k"
    PARAMS = "params"
    EXPLORER = "explorer"  # the explorer component; `<EXPLORER>_have` / `_seq` hold the grid it has, its last pick
    APPLIED_RANKMAP = "applied_rankmap"  # a rank map uploaded on the plan page, offered on Compress & evaluate
    OWNER = "owner"  # this browser tab's id: jobs it launches are its own
    SAVED_FOLDER = "saved_folder"  # the folder the last compress & evaluate job saved to: Generate's default
    CHARTED_JOB = "charted_job"  # the last finished job the evaluate page redrew its chart for


class Params:
    """URL query parameters: a reload finds the job (or run) it was showing."""

    EVAL_JOB = "job"
    SENSITIVITY_JOB = "scan"
    FINETUNE_JOB = "ft"
    GENERATE_JOB = "gen"
    DYNAMICS_JOB = "dyn_job"
    DYNAMICS_RUN = "run"


PLAN_STRATEGIES = wc.UNCALIBRATED  # the strategies the dashboard plans with: those needing calibration are CLI-only
