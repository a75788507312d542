"""The unlabelled tissue tiles of :func:`c2lst.tl.adapt`: drawn from the training sections' images, or given."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.images import as_tiles, resize_tiles
from ..io._histology import HistologyTiles
from ..pp._tissue import tissue_tiles

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

UM_TOLERANCE = 0.05  # relative difference allowed between the tiles' and the spot patches' physical size


def _sections(table: AnnData, mask: np.ndarray, transductive: Sequence[str]) -> list[str] | None:
    """Sections whose images give tiles: those holding training spots, plus the ``transductive`` ones.

    ``None``: the table has one section (no ``obs["library_id"]``).
    """
    if isinstance(transductive, str):
        raise ValueError(f"`transductive` must be a list of section names, got the string {transductive!r}; pass "
                         f"[{transductive!r}].")
    if "library_id" not in table.obs:
        if transductive:
            raise ValueError(f"`transductive` names sections {list(transductive)} but the table has no "
                             "obs['library_id'] column (one section).")
        return None
    libs = table.obs["library_id"].astype(str).to_numpy()
    known = list(dict.fromkeys(libs))
    unknown = [str(x) for x in transductive if str(x) not in known]
    if unknown:
        raise ValueError(f"`transductive` names sections {unknown} that are not in table.obs['library_id'] "
                         f"(sections: {known}).")
    train = set(libs[mask])
    return [x for x in known if x in train or x in {str(t) for t in transductive}]


def local_tissue(sdata: SpatialData | AnnData, table: AnnData, table_key: str | None, tissue: Any,
                 transductive: Sequence[str], mask: np.ndarray, tile_px: int, patch_key: str,
                 seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Resolve ``tl.adapt``'s ``tissue`` to uint8 ``(m, 3, tile_px, tile_px)`` tiles and its record (no pixels).

    An ``int`` draws that many tiles (:func:`c2lst.pp.tissue_tiles`, seeded) from the images of the sections
    holding training spots and of the ``transductive`` sections, excluding the footprints of every spot outside
    ``mask``; tiles have the physical size of the spot patches. An array or
    ``HistologyTiles`` (:func:`c2lst.io.read_histology`) is used as given.
    """
    from anndata import AnnData

    patch_um = float(table.uns.get(patch_key, {}).get("params", {}).get("patch_um", 100.0))
    if isinstance(tissue, bool) or not isinstance(tissue, int | np.integer | np.ndarray | HistologyTiles):
        raise ValueError(f"`tissue` must be a number of tiles (int), a uint8 array of tiles or HistologyTiles "
                         f"(c2lst.io.read_histology), got {type(tissue).__name__}.")
    if not isinstance(tissue, int | np.integer):
        if transductive:
            raise ValueError("`transductive` applies to tiles drawn from the sections' images (`tissue=<int>`), not "
                             "to given tiles.")
        if isinstance(tissue, HistologyTiles):
            if abs(tissue.tile_um / patch_um - 1) > UM_TOLERANCE:
                raise ValueError(f"the tissue tiles are {tissue.tile_um:g} µm across but the spot patches "
                                 f"{patch_um:g} µm; read them with read_histology(..., tile_um={patch_um:g}).")
            files = sorted({str(s) for s in tissue.source})
            arr = tissue.tiles if isinstance(tissue.tiles, np.ndarray) else tissue.tiles[np.arange(len(tissue))]
            tiles, record = as_tiles(arr, name="tissue.tiles"), {"tissue_source": "HistologyTiles",
                                                                 "tissue_sections": files}
        else:
            tiles, record = as_tiles(tissue, name="tissue"), {"tissue_source": "array", "tissue_sections": []}
    else:
        if tissue < 1:
            raise ValueError(f"`tissue` must be a positive number of tiles, got {tissue}.")
        if isinstance(sdata, AnnData):
            raise ValueError("`tissue=<int>` cuts tiles from the sections' H&E images: pass the SpatialData object "
                             "(an AnnData has none), or pass the tiles themselves as an array.")
        libs = _sections(table, mask, transductive)
        if libs is not None and not libs:
            raise ValueError("no section holds training spots; select training spots with `train_mask`.")
        drawn = tissue_tiles(sdata, library_ids=libs, table_key=table_key, tile_um=patch_um, tile_px=tile_px,
                             exclude_spots=~mask, max_tiles=int(tissue), seed=seed)
        tiles, source = drawn.tiles, drawn.source
        record = {"tissue_source": "sections", "tissue_sections": sorted({str(s) for s in source} - {""}),
                  "tissue_budget": int(tissue)}
    record |= {"n_tissue_tiles": len(tiles), "transductive": [str(t) for t in transductive]}
    return resize_tiles(tiles, tile_px), record
