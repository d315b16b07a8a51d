"""Small pieces every part uses: where files live, atomic writes, JSON reading, devices, progress, schedules."""
from __future__ import annotations

from .devices import parse_device
from .hf import transformers_ready
from .paths import PROJECT_ROOT, cache_dir, data_dir
from .progress import Progress, at_step, silent
from .schedule import lr_factor
from .storage import (atomic_folder, atomic_write_bytes, atomic_write_text, check_space, disk_full, disk_writes,
                      free_bytes, no_space, read_json)

VERSION = "0.1.0"  # of the tool: recorded with every run in the registry

__all__ = ["PROJECT_ROOT", "Progress", "VERSION", "at_step", "atomic_folder", "atomic_write_bytes", "atomic_write_text",
           "cache_dir", "check_space", "data_dir", "disk_full", "disk_writes", "free_bytes", "lr_factor", "no_space",
           "parse_device", "read_json", "silent", "transformers_ready"]
