"""The core is a library: importing it loads neither streamlit nor transformers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_core_import_is_free_of_streamlit_and_transformers() -> None:
    code = "import sys, welore_core; print(sorted(m for m in ('streamlit', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.strip() == "[]"
