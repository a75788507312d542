"""One leave-one-section-out fold: the paired training spots, their gene panel and normalised targets."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..pp._counts import lognorm, median_library_size
from ..pp._panel import GenePanel, variance_panel
from ._data import Section

MIN_PAIRED = 2  # paired spots a training section needs (a variance panel, a library-size median)


def n_paired(section: Section, fraction: float) -> int:
    """``round(fraction * n)``, the spots of ``section`` paired at ``fraction``.

    Raises
    ------
    ValueError
        When that is fewer than two spots, naming the smallest fraction the section supports.
    """
    n = len(section.patches)
    k = int(round(fraction * n))
    if k < MIN_PAIRED:
        smallest = f"a fraction of at least {MIN_PAIRED / n:.3g}" if n >= MIN_PAIRED else "no fraction"
        raise ValueError(f"section {section.name!r} has {n} spots: fraction {fraction} pairs {k} of them, fewer than "
                         f"the {MIN_PAIRED} each training section needs. It supports {smallest}; pass larger "
                         "`fractions` or leave the section out of `sections`.")
    return k


def select_pairs(sections: Sequence[Section], fraction: float, seed: int) -> list[np.ndarray]:
    """Pick the paired spots of each training section: :func:`n_paired` of them, seeded."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(len(s.patches), n_paired(s, fraction), replace=False)) for s in sections]


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
        return lognorm(self.test.counts[:, self.cols], self.test.library, self.panel.target_sum)


def make_fold(sections: Sequence[Section], test: str, fraction: float, seed: int, *, n_top_genes: int = 50) -> Fold:
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
    library = np.concatenate([s.library[p] for s, p in zip(train, picks, strict=True)])
    target_sum = median_library_size(library)
    expr = np.concatenate([lognorm(s.counts[p], s.library[p], target_sum) for s, p in zip(train, picks, strict=True)])
    panel, cols = variance_panel(expr, held.genes, target_sum, n_top_genes=n_top_genes, min_spots=0.1)
    return Fold(
        test=held, train=train, fraction=fraction, seed=seed, picks=picks, panel=panel, cols=cols,
        patches=np.concatenate([s.patches[p] for s, p in zip(train, picks, strict=True)]),
        y=np.ascontiguousarray(expr[:, cols]),
        xy=np.concatenate([s.xy[p] for s, p in zip(train, picks, strict=True)]),
        group=np.concatenate([np.full(len(p), i) for i, p in enumerate(picks)]),
    )


def every_spot(fold: Fold) -> Fold:
    """Return the fold with every spot of its training sections paired, keeping its panel and normalisation.

    The adapter of the ``c2l_oracle`` benchmark condition trains on it: the expression of the spots the fold leaves
    unpaired, which no predictor of the fold sees, is given to the generator only. The held-out section stays out.
    """
    picks = tuple(np.arange(len(s.patches)) for s in fold.train)
    expr = np.concatenate([lognorm(s.counts[:, fold.cols], s.library, fold.panel.target_sum) for s in fold.train])
    return replace(fold, picks=picks, patches=np.concatenate([s.patches for s in fold.train]),
                   y=np.ascontiguousarray(expr), xy=np.concatenate([s.xy for s in fold.train]),
                   group=np.concatenate([np.full(len(p), i) for i, p in enumerate(picks)]))


def fold_tissue(fold: Fold, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` tissue tiles (seeded, without replacement) from the fold's training sections, never its held-out one.

    Every tile when the training sections hold fewer. The draw depends on the training sections and ``seed`` only
    (not on the paired fraction).

    Raises
    ------
    ValueError
        When a training section has no tissue tiles loaded, or ``n`` is not positive.
    """
    if n < 1:
        raise ValueError(f"the tissue tile budget must be a positive integer, got {n}.")
    missing = [s.name for s in fold.train if s.tissue is None or not len(s.tissue)]
    if missing:
        raise ValueError(f"training sections {missing} have no tissue tiles; load them with "
                         "load_sections(..., tissue=True).")
    pool = np.concatenate([s.tissue for s in fold.train])
    if len(pool) <= n:
        return pool
    return pool[np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))]
