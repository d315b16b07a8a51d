"""Small pieces every part uses: where files live, atomic writes, JSON reading, devices, progress, schedules."""
from __future__ import annotations

from .devices import parse_device
from .files import check_output, os_error_message, read_capped, read_json, regular_file, within
from .hf import transformers_ready
from .paths import PROJECT_ROOT, cache_dir, data_dir
from .progress import Progress, at_step, silent
from .schedule import lr_factor
from .storage import (atomic_folder, atomic_write_bytes, atomic_write_text, check_space, disk_full, disk_writes,
                      free_bytes, make_folder, no_space, remove_stale, write_files)

VERSION = "0.1.0"  # of the tool: recorded with every run in the registry

__all__ = ["PROJECT_ROOT", "Progress", "VERSION", "at_step", "atomic_folder", "atomic_write_bytes", "atomic_write_text",
           "cache_dir", "check_output", "check_space", "data_dir", "disk_full", "disk_writes", "free_bytes", "lr_factor",
           "make_folder", "no_space", "os_error_message", "parse_device", "read_capped", "read_json", "regular_file",
           "remove_stale", "silent", "transformers_ready", "within", "write_files"]
