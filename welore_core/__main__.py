"""`python -m welore_core` is the `welore` CLI."""
import sys

from .cli import main

sys.exit(main())
