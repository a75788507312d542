"""napari reader and sample data (npe2 manifest ``napari.yaml``): c2lst stores open with ``napari store.zarr``."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

LayerData = tuple[Any, dict[str, Any], str]


def is_c2lst_store(path: str | Path) -> bool:
    """Whether ``path`` is a SpatialData zarr store with a table written by c2lst (``uns['c2lst']``)."""
    path = Path(path)
    tables = path / "tables"
    return path.is_dir() and tables.is_dir() and any((t / "uns" / "c2lst").is_dir() for t in tables.iterdir())


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 reader hook: :func:`read_store` for one c2lst store, ``None`` (not ours) for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_store if is_c2lst_store(path) else None


def read_store(path: str | list[str]) -> list[LayerData]:
    """Read a c2lst store as napari layer data: the H&E image, the spots coloured by a gene, the held-out spots.

    The gene and layer shown first are a predicted panel gene in ``c2lst_pred`` when the store holds
    predictions, else a panel gene in ``lognorm``, else the first gene in ``X``; the dock widget
    (Plugins > c2lst > Spot expression) switches them.
    """
    import spatialdata

    from ._napari import layer_data

    path = path[0] if isinstance(path, list) else path
    if not is_c2lst_store(path):
        raise ValueError(f"{path} is not a store written by c2lst (no table with uns['c2lst']); open it with "
                         "napari-spatialdata, or read the data with c2lst.io and write it with sdata.write().")
    return layer_data(spatialdata.read_zarr(path))


def demo_sample() -> list[LayerData]:
    """Return the sample data: the bundled her2st C2 section, ERBB2 (log-normalised over all spots) on the H&E."""
    from ..datasets import demo
    from ..pp import normalize
    from ._napari import layer_data

    sdata = demo()
    normalize(sdata)
    return layer_data(sdata, genes=["ERBB2"], layer="lognorm")
