"""Figures as HTML reports that open offline, the case this tool is built for: plotly.js is written once
beside the reports (`plotly.min.js`, from the installed plotly package) and each report loads it by a relative
path, so a folder of reports opens without internet and carries one copy of the library, not one per file."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import plotly.graph_objects as go

from ..utils import write_files

PLOTLY_JS = "plotly.min.js"


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """The plotly.js bundle of the installed plotly package (about 4.8 MB)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def report_html(fig: go.Figure) -> str:
    """A whole HTML page for `fig` that loads plotly.js from `plotly.min.js` in its own folder."""
    return fig.to_html(include_plotlyjs="directory", full_html=True)


def write_reports(folder: str | Path, figures: dict[str, go.Figure],
                  files: dict[str, str | bytes] | None = None) -> list[Path]:
    """`folder/<stem>.html` for each figure, plotly.min.js beside them, and any other `files` (a CSV, JSON), written
    as one step: a failure (a full disk) leaves none of them behind. Returns the HTML paths."""
    pages: dict[str, str | bytes] = {f"{stem}.html": report_html(fig) for stem, fig in figures.items()}
    write_files(Path(folder), {**(files or {}), **pages, PLOTLY_JS: plotly_js()})
    return [Path(folder) / name for name in pages]
