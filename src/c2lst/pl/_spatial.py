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

    One row per gene, one column per layer. Each spot is drawn as its true-size circle on the coarsest
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
            circles.set_clim(*contrast_limits(vals, layer))
            ax.add_collection(circles)
            fig.colorbar(circles, ax=ax, shrink=0.7, label=layer)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{gene} · {layer}"
            if j > 0 and layer != ERROR:
                mask = evaluated[layer]
                r = pearson(values[(gene, layers[0])][mask], vals[mask])
                where = "held-out" if not mask.all() else "all"
                title += f"\nr = {r:.2f} ({where}, n = {int(mask.sum())})"
            ax.set_title(title, fontsize=10)
    return finish(fig, show=show, save=save)
