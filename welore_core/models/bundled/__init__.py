"""Files written into every compressed folder so that plain transformers loads it (`modeling_welore.py`)."""
from __future__ import annotations

from pathlib import Path

MODELING = Path(__file__).with_name("modeling_welore.py")
