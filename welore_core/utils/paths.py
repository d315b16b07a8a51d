"""Where things live: the cache folder and the shared data folder, both overridable by environment variables."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # welore_core/utils/paths.py -> the project


def cache_dir() -> Path:
    """Root of everything WeLore computes (`WELORE_CACHE`, default `<project>/cache`)."""
    return Path(os.environ.get("WELORE_CACHE", PROJECT_ROOT / "cache")).expanduser()


def data_dir() -> Path:
    """Shared data sets (`WELORE_DATA`, default `../shared/data` beside the project)."""
    return Path(os.environ.get("WELORE_DATA", PROJECT_ROOT.parent / "shared" / "data")).expanduser()
