"""Histology -> expression predictor: a patch encoder followed by a ridge or MLP head.

Encoders turn ``(n, 3, H, W)`` uint8 RGB patches into ``(n, F)`` features:

``"handcrafted"``
    Colour / HED / GLCM / nuclei statistics (:func:`c2lst.metrics.handcrafted_features`), no weights.
``"cnn"``
    A small CNN trained end-to-end on the training patches (with a linear probe on the standardised
    targets), then frozen.
``"central"``
    ``central.features(patches, t=..., batch_size=..., seed=...)`` of a central diffusion model.
a path (or a :class:`ResNetEncoder`)
    A local torchvision/timm ResNet checkpoint (``.safetensors``; architecture inferred from the keys),
    frozen, ImageNet-normalised, global-average-pooled (saved predictors record it as ``"resnet"``).
a callable
    Any ``patches -> (n, F)`` feature function (not savable).

Frozen encoders' features (central, ResNet, callable) are by default concatenated with the handcrafted
ones; the end-to-end CNN's are not (its features are fitted to the training targets, so a ridge refit on
them would trust them over the handcrafted ones; measured on her2st: worse than either alone).

The head maps standardised features to standardised targets: ``"ridge"`` (one alpha per gene chosen by
efficient leave-one-out CV on the real training rows only, then refit on real + extra rows) or ``"mlp"``.
Extra rows (synthetic or augmented patches with their expression) and feature-space mixup rows only ever
enter fitting; every statistic (feature and target mean/std, ridge alphas) comes from the real rows.
Weights are saved as ``config.json`` + ``model.safetensors`` (never pickled).
"""
from __future__ import annotations

from .encoders import FeatureModel, PatchCNN, ResNetEncoder
from .extra_rows import (
    EXTRA_ALIGN,
    EXTRA_WEIGHTS,
    GROUP_STD_PRIOR,
    MIN_GROUP_ROWS,
    SYNTHETIC_ALIGN,
    SYNTHETIC_WEIGHT,
    augment_patches,
    check_extra_options,
)
from .heads import HEADS, MLPHead
from .model import ALPHA_CV, ENCODERS, Predictor
from .persistence import load_predictor, save_predictor
from .ridge import RIDGE_ALPHAS, group_cv_alpha, ridge_per_target

__all__ = [
    "ALPHA_CV",
    "ENCODERS",
    "EXTRA_ALIGN",
    "EXTRA_WEIGHTS",
    "GROUP_STD_PRIOR",
    "HEADS",
    "MIN_GROUP_ROWS",
    "RIDGE_ALPHAS",
    "SYNTHETIC_ALIGN",
    "SYNTHETIC_WEIGHT",
    "FeatureModel",
    "MLPHead",
    "PatchCNN",
    "Predictor",
    "ResNetEncoder",
    "augment_patches",
    "check_extra_options",
    "group_cv_alpha",
    "load_predictor",
    "ridge_per_target",
    "save_predictor",
]
