"""Torch/diffusers core. Never imports anndata or spatialdata."""
