"""Package-wide settings (progress bars, verbosity, threads, image pixel budget)."""
from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass
class Settings:
    """Global c2lst settings.

    Attributes
    ----------
    progress_bar
        Show tqdm progress bars in long-running steps.
    verbosity
        Logging level of the ``c2lst`` logger (``logging.INFO`` by default).
    n_threads
        Torch intra-op threads used by training and sampling on the CPU. ``None`` keeps torch's default.
        Keep it at or below the number of free cores: oversubscription costs 3-6x.
    max_image_pixels
        Largest image (width x height) that c2lst decodes into memory (JPEG/PNG, or a TIFF level read whole):
        a guard against decompression bombs (a small file declaring huge dimensions). The default, one
        billion pixels (3 GB of RGB), covers the her2st JPEGs (92 Mpx) and whole-slide levels; TIFF/SVS
        slides read lazily are not limited. Raise it for a larger image you trust; ``None`` disables it.
    """

    progress_bar: bool = True
    verbosity: int = logging.INFO
    n_threads: int | None = None
    max_image_pixels: int | None = 1_000_000_000

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "verbosity":
            logging.getLogger("c2lst").setLevel(value)  # type: ignore[arg-type]


settings = Settings()
