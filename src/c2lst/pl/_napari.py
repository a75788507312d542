"""The H&E image and the spots coloured by expression in a napari viewer (extra ``c2lst[napari]``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import recorded_train_mask, spot_table
from ._expression import DIVERGING, ERROR, contrast_limits, gene_values
from ._geometry import affine_yx, pyramid_levels, section_image, section_spots

if TYPE_CHECKING:
    from spatialdata import SpatialData


def spot_points(spots: dict[str, Any], gene: str, layer: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """Napari layer data ``(yx, kwargs, "points")`` of the spots coloured by ``gene`` in ``layer``."""
    values = gene_values(spots["table"], gene, layer)[spots["rows"]]
    return spots["yx"], {
        "size": spots["diameter"],
        "affine": spots["affine"],
        "features": {"value": np.nan_to_num(values, nan=0.0)},
        "face_color": "value",
        "face_colormap": DIVERGING if layer == ERROR else "viridis",
        "face_contrast_limits": contrast_limits(values, layer),
        "border_width": 0,
        "opacity": 0.9,
        "name": f"{gene} ({layer})",
        "metadata": {"c2lst_spots": spots, "gene": gene, "layer": layer},
    }, "points"


def add_spot_layer(viewer: Any, spots: dict[str, Any], gene: str, layer: str) -> Any:
    """Add a Points layer of the spots coloured by ``gene`` in ``layer`` (``spots`` from :func:`layer_data`)."""
    data, kwargs, _ = spot_points(spots, gene, layer)
    return viewer.add_points(data, **kwargs)


def default_view(table: Any) -> tuple[str, str]:
    """``(gene, layer)`` to show first: a predicted panel gene, else a panel gene in ``lognorm``, else ``X``."""
    for layer, panel in (("c2lst_pred", "c2lst_pred_panel"), ("lognorm", "c2lst_panel"), ("lognorm", None),
                         ("X", None)):
        if layer != "X" and layer not in table.layers:
            continue
        flags = table.var[panel].to_numpy(bool) if panel in table.var else np.ones(table.n_vars, bool)
        if flags.any():
            return str(table.var_names[int(np.argmax(flags))]), layer
    return str(table.var_names[0]), "X"


def layer_data(
    sdata: SpatialData,
    *,
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    library_id: str | None = None,
    coordinate_system: str = "global",
) -> list[tuple[Any, dict[str, Any], str]]:
    """Napari layer data of a section: the H&E image, one Points layer per gene, the held-out spots outlined.

    What :func:`napari` adds to a viewer and the c2lst napari reader returns (``napari store.zarr``).
    ``genes``/``layer`` default to :func:`default_view`.
    """
    if coordinate_system not in sdata.coordinate_systems:
        raise ValueError(f"coordinate system {coordinate_system!r} not found; available: {sdata.coordinate_systems}.")
    _, table, _ = spot_table(sdata, table_key)
    shapes_name, rows, xy, radius = section_spots(sdata, table, shapes_key=shapes_key, library_id=library_id)
    gene0, layer0 = default_view(table)
    layer = layer or layer0
    genes = [gene0] if genes is None else list(genes)
    for gene in genes:  # validate everything before anything is drawn
        gene_values(table, gene, layer)
    out: list[tuple[Any, dict[str, Any], str]] = []
    if sdata.images:
        image_name = section_image(sdata, shapes_name, image_key)
        levels = [lv.transpose("y", "x", "c").data for lv in pyramid_levels(sdata.images[image_name])]
        out.append((levels if len(levels) > 1 else levels[0],
                    {"rgb": True, "multiscale": len(levels) > 1, "name": image_name,
                     "affine": affine_yx(sdata, sdata.images[image_name], coordinate_system)}, "image"))
    spots = {"table": table, "rows": rows, "yx": xy[:, ::-1].copy(), "diameter": 2 * radius,
             "affine": affine_yx(sdata, sdata.shapes[shapes_name], coordinate_system)}
    out.extend(spot_points(spots, gene, layer) for gene in genes)
    train = recorded_train_mask(table, "c2lst_pred")
    if train is not None and not train[rows].all():
        held = ~train[rows]
        out.append((spots["yx"][held], {"size": spots["diameter"][held], "affine": spots["affine"],
                                        "face_color": "transparent", "border_color": "black", "border_width": 0.08,
                                        "name": "held-out spots", "visible": True}, "points"))
    return out


def napari(
    sdata: SpatialData,
    *,
    genes: str | Sequence[str] | None = None,
    layer: str | None = None,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    library_id: str | None = None,
    coordinate_system: str = "global",
    viewer: Any = None,
    widget: bool = True,
    show: bool = True,
) -> Any:
    """Open the H&E image and the spots, coloured by gene expression, in napari.

    The image is added as an RGB (multiscale when a pyramid) image layer and the spots as one Points layer
    per gene (plus the held-out spots, outlined, when ``tl.predict`` recorded a split), each placed in ``coordinate_system`` with its own affine transformation from spatialdata, so
    the spots sit on the tissue whatever the image's resolution. A dock widget lets you switch the gene and
    the layer (measured, predicted, or error = predicted - measured).

    Parameters
    ----------
    sdata
        SpatialData with a table, its spot circles and an image.
    genes
        Gene(s) to show (default: the first gene of the predicted panel, else of the gene panel, else of the table).
    layer
        Table layer to colour by: ``"lognorm"`` (measured), ``"c2lst_pred"`` (predicted), ``"error"`` or any
        other layer (default: ``"c2lst_pred"`` when present, else ``"lognorm"``, else ``"X"``).
    table_key, image_key, shapes_key
        Elements to use when the SpatialData holds several.
    library_id
        Section to show when the table holds several.
    coordinate_system
        Coordinate system to show the data in.
    viewer
        Existing ``napari.Viewer`` to add to (default: a new one).
    widget
        Dock the gene / layer picker.
    show
        Show the viewer window (``False`` for scripts and tests).

    Returns
    -------
    The ``napari.Viewer``; its spot layers carry ``metadata['gene']`` and ``metadata['layer']``.
    """
    try:
        import napari as _napari
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise ValueError("napari is not installed; install the extra: pip install 'c2lst[napari]'.") from err
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        raise ValueError(f"c2lst.pl.napari needs a SpatialData object (image + spots), got {type(sdata).__name__}.")
    data = layer_data(sdata, genes=[genes] if isinstance(genes, str) else genes, layer=layer, table_key=table_key,
                      image_key=image_key, shapes_key=shapes_key, library_id=library_id,
                      coordinate_system=coordinate_system)
    viewer = _napari.Viewer(show=show) if viewer is None else viewer
    for arr, kwargs, kind in data:
        getattr(viewer, f"add_{kind}")(arr, **kwargs)
    if widget:
        from ._napari_widget import ExpressionWidget

        viewer.window.add_dock_widget(ExpressionWidget(viewer), name="c2lst expression", area="right")
    return viewer
