"""Scanpy-style ``show=`` / ``save=`` / ``ax=`` handling shared by the plots, and their parameter docs."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

F = TypeVar("F", bound=Callable)

# one description per shared plotting parameter; docstrings say ``{ax}`` / ``{show_save}`` where they go
_PARAM_DOCS = {
    "ax": ("ax", "Draw into this axis instead of a new figure."),
    "show_save": ("show", "Show the figure (``None``: only with an interactive backend).",
                  "save", "Write the figure to this path (any matplotlib format, by its extension)."),
}


def figure_doc(func: F) -> F:
    """Fill the ``{ax}`` and ``{show_save}`` lines of a plotting function's numpydoc Parameters section."""
    doc = func.__doc__ or ""
    for key, pairs in _PARAM_DOCS.items():
        match = re.search(rf"^( *){{{key}}}$", doc, flags=re.MULTILINE)
        if match is None:
            continue
        pad = match.group(1)
        text = "\n".join(f"{pad}{name}\n{pad}    {desc}" for name, desc in zip(pairs[::2], pairs[1::2], strict=True))
        doc = doc[:match.start()] + text + doc[match.end():]
    func.__doc__ = doc
    return func


def finish(fig: Figure, *, show: bool | None, save: str | Path | None) -> Figure:
    """Save ``fig`` to ``save`` (any matplotlib format, by extension) and show it when asked.

    ``show=None`` shows the figure only with an interactive backend (a notebook or a GUI), never under Agg.
    """
    if save is not None:
        path = Path(save)
        if path.parent and not path.parent.exists():
            raise ValueError(f"cannot save to {path}: folder {path.parent} does not exist; create it first.")
        fig.savefig(path, dpi=150, bbox_inches="tight")
    interactive = matplotlib.get_backend().lower() not in {"agg", "pdf", "svg", "ps", "cairo", "template"}
    if show or (show is None and interactive and plt.isinteractive()):
        plt.show()
    return fig
