"""Torch/diffusers core. Never imports anndata or spatialdata."""
from __future__ import annotations

import lazy_loader as _lazy

# lazy: a light submodule (configs, recipe) loads without torch and diffusers
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
