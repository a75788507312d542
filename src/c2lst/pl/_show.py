"""Scanpy-style ``show=`` / ``save=`` handling shared by the plots."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


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
