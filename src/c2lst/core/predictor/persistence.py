"""Predictor persistence: ``config.json`` + ``model.safetensors``, sha256-checked, written atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy

from ...files import atomic_dir, check_output
from ..checkpoint import load_tensors, manifest_entry, read_json, sha256_file
from .encoders import FeatureModel, PatchCNN, ResNetEncoder
from .heads import MLPHead

if TYPE_CHECKING:
    from .model import Predictor

FORMAT = "c2lst-predictor"
PREDICTOR_WEIGHTS = "model.safetensors"


def save_predictor(predictor: Predictor, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fitted predictor as ``config.json`` + ``model.safetensors`` (with their sha256) to ``path``."""
    if "x_mean" not in predictor.stats:
        raise ValueError("nothing to save: the predictor is not fitted.")
    if predictor.encoder_kind == "callable":
        raise ValueError("a predictor with a callable encoder cannot be saved; use a named encoder or a checkpoint.")
    target = check_output(path, overwrite=overwrite, what="predictor directory")
    tensors = {f"stats.{k}": np.ascontiguousarray(v) for k, v in predictor.stats.items()}
    for prefix, net in (("cnn.", predictor.cnn), ("resnet.", predictor.resnet), ("mlp.", predictor.mlp)):
        if net is not None:
            tensors.update({prefix + k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()})
    with atomic_dir(target, kind="predictor") as tmp:
        save_numpy(tensors, str(tmp / PREDICTOR_WEIGHTS))
        config = predictor.params | {"files_sha256": {PREDICTOR_WEIGHTS: sha256_file(tmp / PREDICTOR_WEIGHTS)}}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
    return target


def load_predictor(cls: type[Predictor], path: str | Path, *, central: FeatureModel | None = None) -> Predictor:
    """Read a predictor written by :func:`save_predictor` into ``cls`` (files checked against their sha256)."""
    d = Path(path)
    if not (d / "config.json").exists() or not (d / PREDICTOR_WEIGHTS).exists():
        raise ValueError(f"{d} is not a saved predictor (needs config.json and {PREDICTOR_WEIGHTS}); pass a "
                         "folder written by Predictor.save or `c2lst predict --save-model`.")
    cfg = read_json(d / "config.json", what="predictor")
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{d}/config.json is not a c2lst predictor config; pass a folder written by "
                         "Predictor.save or `c2lst predict --save-model`.")
    files = manifest_entry(cfg, "files_sha256", d / "config.json", what="predictor")
    sha = manifest_entry(files, PREDICTOR_WEIGHTS, d / "config.json", what="predictor")
    keys = ("central_t", "seed", "epochs", "batch_size", "lr", "weight_decay", "cnn_width", "feat_dim", "hidden",
            "alphas", "mixup_alpha", "batch_features", "encoder", "encoder_path", "head", "genes")
    for key in keys:
        manifest_entry(cfg, key, d / "config.json", what="predictor")
    if cfg["encoder"] == "central" and cfg.get("central_identity") and central is not None:
        got = central.identity() if callable(getattr(central, "identity", None)) else None
        if got != cfg["central_identity"]:
            raise ValueError("the model passed as `central` is not the one this predictor read its features from; pass "
                             "that model (the same CentralModel, or the same adapted LocalModel).")
    tensors = {k: v.numpy() for k, v in load_tensors(d / PREDICTOR_WEIGHTS, sha256=sha, what="predictor").items()}
    kwargs = {k: cfg[k] for k in keys[:12]}
    kwargs["alphas"] = tuple(kwargs["alphas"])
    kwargs["group_norm"] = bool(cfg.get("group_norm", False))  # absent in predictors saved before it existed
    kwargs["alpha_cv"] = cfg.get("alpha_cv", "loo")  # likewise

    def sub(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}

    encoder = ResNetEncoder.from_state_dict(sub("resnet.")) if cfg["encoder"] == "resnet" else cfg["encoder"]
    obj = cls(encoder=encoder, handcrafted=bool(cfg.get("handcrafted", False)), head=cfg["head"], genes=cfg["genes"],
              central=central, **kwargs)
    obj.encoder_path = cfg["encoder_path"]
    obj.stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}

    if cfg["encoder"] == "cnn":
        obj.cnn = PatchCNN(cfg["cnn_width"], cfg["feat_dim"])
        obj.cnn.load_state_dict(sub("cnn."))
        obj.cnn.eval()
    if cfg["head"] == "mlp":
        obj.mlp = MLPHead(len(obj.stats["x_mean"]), len(obj.stats["y_mean"]), cfg["hidden"])
        obj.mlp.load_state_dict(sub("mlp."))
        obj.mlp.eval()
    obj.fit_info = dict(cfg.get("fit", {}))
    return obj
