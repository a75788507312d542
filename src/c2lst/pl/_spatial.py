"""Measured vs predicted expression maps over the H&E image."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ._expression import DIVERGING, ERROR, contrast_limits, gene_values, heldout_mask, pearson
from ._geometry import section_layout
from ._show import figure_doc, finish

LABELS = {"lognorm": "measured", "X": "measured (X)", "c2lst_pred": "predicted", ERROR: "predicted − measured"}

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@figure_doc
def spatial_genes(
    data: SpatialData | AnnData,
    genes: str | Sequence[str],
    *,
    layers: Sequence[str] = ("lognorm", "c2lst_pred"),
    train_mask: Any = None,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    library_id: str | None = None,
    cmap: str = "viridis",
    alpha: float = 0.9,
    panel_size: float = 3.6,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Measured and predicted expression of genes, side by side over the H&E image.

    One row per gene, one column per layer, titled "measured" (``lognorm``) and "predicted" (``c2lst_pred``).
    The measured and predicted maps of a gene share one colour scale (1st-99th percentile of both), held-out
    spots are outlined in black, and a scale bar in µm is drawn when the reader recorded the spot size
    (``uns['c2lst']['spatial']``). Each spot is drawn as its true-size circle on the coarsest
    pyramid level of the image that is still at least 1000 px across, placed with the spatialdata
    transformations between the circles and the image. Predicted panels carry the gene's Pearson r
    between that layer and the first (measured) layer, over held-out spots when a training mask is known
    (``train_mask=``, else the one :func:`c2lst.tl.predict` recorded), over all spots of the section otherwise.

    Parameters
    ----------
    data
        SpatialData (table, spot circles and image) or AnnData with ``obsm['spatial']`` (scanpy's Visium
        convention for the image, when present).
    genes
        Gene name(s), from the table's ``var_names``.
    layers
        Table layers to show, the measured one first (``"X"`` for ``table.X``; ``"error"`` for
        ``c2lst_pred - lognorm``, drawn with a diverging colormap centred on 0).
    train_mask
        Boolean mask of the training spots over the whole table; Pearson r is then computed on
        the other spots. ``None`` reads the mask recorded by ``tl.predict`` in ``uns[<layer>]['params']``.
    table_key, image_key, shapes_key
        Elements to use when the SpatialData holds several.
    library_id
        Section to draw when the table holds several.
    cmap
        Matplotlib colormap (the error layer uses ``PiYG``).
    alpha
        Opacity of the spots.
    panel_size
        Size of one panel in inches.
    {show_save}

    Returns
    -------
    The matplotlib Figure, one axis per (gene, layer) panel plus colour bars.
    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    layers = list(layers)
    if not genes or not layers:
        raise ValueError("pass at least one gene and one layer.")
    layout = section_layout(data, table_key=table_key, image_key=image_key, shapes_key=shapes_key, library_id=library_id)
    table, rows = layout.table, layout.rows
    values = {(g, lay): gene_values(table, g, lay)[rows] for g in genes for lay in layers}
    evaluated = {lay: heldout_mask(table, lay, train_mask)[rows] for lay in layers[1:]}
    # spots to outline: held out from the predictor of the first predicted layer (none when all spots trained it)
    held_out = next((m for m in evaluated.values() if not m.all()), np.zeros(len(rows), dtype=bool))
    limits = {g: contrast_limits(np.concatenate([values[(g, lay)] for lay in layers if lay != ERROR]), "")
              for g in genes if any(lay != ERROR for lay in layers)}
    um_per_unit = _microns_per_unit(table, layout.radius)

    fig, axes = plt.subplots(len(genes), len(layers), figsize=(panel_size * len(layers) * 1.15, panel_size * len(genes)),
                             squeeze=False, layout="constrained")
    pad = 2.0 * float(np.nanmax(layout.radius)) if len(layout.radius) else 0.0
    x0, x1 = layout.xy[:, 0].min() - pad, layout.xy[:, 0].max() + pad
    y0, y1 = layout.xy[:, 1].min() - pad, layout.xy[:, 1].max() + pad
    for i, gene in enumerate(genes):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            vals = values[(gene, layer)]
            if layout.image is not None:
                ax.imshow(layout.image, extent=layout.extent, interpolation="bilinear")
            finite = np.isfinite(vals)
            circles = PatchCollection([Circle((x, y), r) for (x, y), r in zip(layout.xy[finite], layout.radius[finite], strict=True)],
                                      cmap=DIVERGING if layer == ERROR else cmap, alpha=alpha, linewidths=0)
            circles.set_array(vals[finite])
            circles.set_clim(*(contrast_limits(vals, layer) if layer == ERROR else limits[gene]))
            ax.add_collection(circles)
            if held_out.any():
                ax.add_collection(PatchCollection(
                    [Circle((x, y), r) for (x, y), r in zip(layout.xy[held_out], layout.radius[held_out], strict=True)],
                    facecolor="none", edgecolor="black", linewidths=0.6))
            fig.colorbar(circles, ax=ax, shrink=0.7, label=LABELS.get(layer, layer))
            if um_per_unit is not None:
                _scale_bar(ax, um_per_unit, x0, x1, y0, y1)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{gene} · {LABELS.get(layer, layer)}"
            if j > 0 and layer != ERROR:
                mask = evaluated[layer]
                r = pearson(values[(gene, layers[0])][mask], vals[mask])
                where = "held-out" if not mask.all() else "all"
                title += f"\nr = {r:.2f} ({where}, n = {int(mask.sum())})"
            ax.set_title(title, fontsize=10)
    if held_out.any():
        fig.suptitle("black outline: held-out spots (not used to train the predictor)", fontsize=9)
    return finish(fig, show=show, save=save)


def _microns_per_unit(table: AnnData, radius: np.ndarray) -> float | None:
    """Microns per plot unit, from the spot diameter the reader recorded and the drawn spot radius (else ``None``)."""
    diameter = table.uns.get("c2lst", {}).get("spatial", {}).get("spot_diameter_um")
    r = float(np.nanmedian(radius)) if len(radius) else float("nan")
    return float(diameter) / (2 * r) if diameter and np.isfinite(r) and r > 0 else None


def _scale_bar(ax: Any, um_per_unit: float, x0: float, x1: float, y0: float, y1: float) -> None:
    """Draw a bar of a round length (about a fifth of the panel) in the lower left corner, labelled in µm or mm."""
    target = (x1 - x0) * um_per_unit / 5
    length = max(v for v in (10, 20, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000) if v <= max(target, 10))
    width = length / um_per_unit
    left, base = x0 + 0.04 * (x1 - x0), y1 - 0.05 * (y1 - y0)
    ax.plot([left, left + width], [base, base], color="black", linewidth=3, solid_capstyle="butt")
    ax.text(left + width / 2, base - 0.015 * (y1 - y0), f"{length / 1000:g} mm" if length >= 1000 else f"{length} µm",
            ha="center", va="bottom", fontsize=8)
