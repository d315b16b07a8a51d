"""User-supplied text shown on a page as the literal characters it holds.

Streamlit renders Markdown in st.markdown, st.error/warning/info/success, captions, progress texts and toasts.
A path, a file name, a layer name from an uploaded rank map or an error naming one of them is the user's (or a
file's author's) text: `![x](http://host/x.png)` in it would make the browser fetch that URL. Every such string
goes through `plain` before it reaches Markdown.
"""
from __future__ import annotations

import re

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'])")  # CommonMark lets any ASCII punctuation be escaped


def plain(text: object) -> str:
    """`text` as Markdown that renders exactly its characters: no link, image, emphasis, math, emoji or HTML."""
    return _MARKDOWN.sub(r"\\\1", str(text)).replace("\n", "  \n")
