"""One leave-one-section-out fold: the paired training spots, their gene panel and normalised targets."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..pp._panel import GenePanel
from ._data import Section


def select_pairs(sections: Sequence[Section], fraction: float, seed: int) -> list[np.ndarray]:
    """Pick the paired spots of each training section: ``round(fraction * n)`` (>= 2), seeded."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(len(s.patches), max(2, int(round(fraction * len(s.patches)))), replace=False))
            for s in sections]


def variance_panel(counts: np.ndarray, library: np.ndarray, genes: np.ndarray, n_top: int,
                   min_spots: float = 0.1) -> tuple[GenePanel, np.ndarray]:
    """Top ``n_top`` genes by lognorm variance on the training spots (as ``pp.gene_panel``); their column indices."""
    target_sum = float(np.median(library[library > 0]))
    y = np.log1p(counts / library[:, None] * target_sum)
    var = y.var(axis=0)
    var[(y > 0).mean(axis=0) < min_spots] = -np.inf
    top = np.argsort(-var, kind="stable")[:n_top]
    panel = GenePanel(tuple(genes[top]), y[:, top].mean(axis=0), np.maximum(y[:, top].std(axis=0), 1e-3), target_sum,
                      {"n_top": n_top, "flavor": "variance", "min_spots": min_spots, "n_train": len(counts)})
    return panel, top


def lognorm(section: Section, cols: np.ndarray, panel: GenePanel, rows: np.ndarray | None = None) -> np.ndarray:
    """``log1p`` of the panel genes' counts scaled to the panel's target sum, for ``rows`` (default: all spots)."""
    rows = np.arange(len(section.patches)) if rows is None else rows
    return np.log1p(section.counts[np.ix_(rows, cols)] / section.library[rows, None] * panel.target_sum).astype(np.float32)


@dataclass(frozen=True)
class Fold:
    """The paired training spots of one fold at one fraction and seed (everything fitted comes from these).

    ``patches``, ``y`` (lognorm panel expression), ``xy`` (array positions) and ``group`` (index of the training
    section) are concatenated over ``train`` in order; ``picks`` are the paired rows of each training section.
    """

    test: Section
    train: tuple[Section, ...]
    fraction: float
    seed: int
    picks: tuple[np.ndarray, ...]
    panel: GenePanel
    cols: np.ndarray
    patches: np.ndarray
    y: np.ndarray
    xy: np.ndarray
    group: np.ndarray

    @property
    def z(self) -> np.ndarray:
        """Standardised training expression (the generator's conditioning)."""
        return self.panel.standardize(self.y)

    def truth(self) -> np.ndarray:
        """Lognorm panel expression of every spot of the held-out section (scored, never fitted)."""
        return lognorm(self.test, self.cols, self.panel)


def make_fold(sections: Sequence[Section], test: str, fraction: float, seed: int, *, n_top: int = 50) -> Fold:
    """Hold out section ``test``, pair ``fraction`` of each other section's spots, choose the panel on them.

    Raises
    ------
    ValueError
        When ``test`` is not among ``sections``.
    """
    names = [s.name for s in sections]
    if test not in names:
        raise ValueError(f"test section {test!r} is not among the sections {names}.")
    held = sections[names.index(test)]
    train = tuple(s for s in sections if s.name != test)
    picks = tuple(select_pairs(train, fraction, seed))
    counts = np.concatenate([s.counts[p] for s, p in zip(train, picks, strict=True)])
    library = np.concatenate([s.library[p] for s, p in zip(train, picks, strict=True)])
    panel, cols = variance_panel(counts, library, held.genes, n_top)
    return Fold(
        test=held, train=train, fraction=fraction, seed=seed, picks=picks, panel=panel, cols=cols,
        patches=np.concatenate([s.patches[p] for s, p in zip(train, picks, strict=True)]),
        y=np.concatenate([lognorm(s, cols, panel, p) for s, p in zip(train, picks, strict=True)]),
        xy=np.concatenate([s.xy[p] for s, p in zip(train, picks, strict=True)]),
        group=np.concatenate([np.full(len(p), i) for i, p in enumerate(picks)]),
    )
