"""Package-wide settings (progress bars, verbosity, threads)."""
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
    """

    progress_bar: bool = True
    verbosity: int = logging.INFO
    n_threads: int | None = None

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "verbosity":
            logging.getLogger("c2lst").setLevel(value)  # type: ignore[arg-type]


settings = Settings()
