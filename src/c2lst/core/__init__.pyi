"""Torch/diffusers core. Never imports anndata or spatialdata."""
from .configs import CONFIGS, DiffusionConfig, get_config
from .models import CentralModel, LocalModel

__all__ = ["CONFIGS", "CentralModel", "DiffusionConfig", "LocalModel", "get_config"]
