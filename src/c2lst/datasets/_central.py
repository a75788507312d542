"""The default central model shipped with the package (pretrained on public histology-only tiles)."""
from __future__ import annotations

from pathlib import Path

from ..core.models import MANIFEST, CentralModel

CENTRAL_DIR = Path(__file__).parent / "data" / "central_default"


def central_default(*, device: str | None = None) -> CentralModel:
    """Load the bundled default central model (``"cpu"`` configuration, 64 px tiles at 1.5625 µm/px).

    It was pretrained with :func:`c2lst.tl.pretrain` on the public histology-only tiles described in
    ``data/central_default/README.md`` (no her2st tissue), so it has never seen the local sections.

    Parameters
    ----------
    device
        Device to load the weights on (default CPU).

    Returns
    -------
    The :class:`~c2lst.core.CentralModel`.

    Raises
    ------
    ValueError
        If this installation does not include the bundled model.
    """
    if not (CENTRAL_DIR / MANIFEST).is_file():
        raise ValueError(f"no bundled central model in {CENTRAL_DIR}; pretrain one with "
                         "c2lst.tl.pretrain(c2lst.io.read_histology(...), config='cpu', out=...) and load it with "
                         "c2lst.core.CentralModel.load(out).")
    return CentralModel.load(CENTRAL_DIR, device=device)
