"""Pickle-free persistence: safetensors + JSON, sha256 fingerprints, atomic directory writes.

Nothing here calls ``torch.load``: weights, EMA shadows and optimizer moments are safetensors tensors,
scalars and structure are JSON. Every file written is fingerprinted (sha256) in a JSON manifest that is
written last, so a truncated or half-written directory is detected on load.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_sha256(*state_dicts: dict[str, torch.Tensor]) -> str:
    """Hex sha256 of tensors (names, dtypes, shapes and bytes, in sorted name order), format-independent."""
    h = hashlib.sha256()
    for i, sd in enumerate(state_dicts):
        for key in sorted(sd):
            t = sd[key].detach().cpu().contiguous()
            h.update(f"{i}/{key}/{t.dtype}/{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_json(path: str | Path, *, what: str) -> dict[str, Any]:
    """Read a JSON manifest; ``ValueError`` naming the file, the ``what`` and the fix when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: {path.parent} is not a saved {what}. Pass the folder c2lst saved it to.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt ({err}); the {what} cannot be loaded. Save or copy it again.") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a c2lst manifest (a JSON object); the {what} cannot be loaded. Save it again.")
    return meta


def manifest_entry(meta: dict[str, Any], key: str, path: str | Path, *, what: str) -> Any:
    """``meta[key]``, or a ``ValueError`` naming the manifest ``path`` when the entry is missing."""
    if key not in meta:
        raise ValueError(f"{path} has no {key!r} entry: the {what} was written by another tool or an older c2lst "
                         f"without integrity checks, so its files cannot be verified. Save the {what} again with "
                         "this c2lst version.")
    return meta[key]


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> str:
    """Save tensors as safetensors; return the file's sha256."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    return sha256_file(path)


def load_tensors(path: str | Path, *, sha256: str | None, what: str) -> dict[str, torch.Tensor]:
    """Load safetensors, verifying the sha256 recorded in a manifest; ``ValueError`` when corrupt/missing."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: the {what} is incomplete. Copy or save it again.")
    if sha256 is not None and sha256_file(path) != sha256:
        raise ValueError(f"{path} does not match its recorded sha256 (truncated or modified file): the {what} "
                         "is corrupt. Re-create it.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}): the {what} is corrupt. Copy or save it "
                         "again.") from None


def save_module(module: nn.Module, directory: str | Path) -> str:
    """``save_pretrained`` a diffusers ``ModelMixin`` (config.json + safetensors); return the weights sha256."""
    module.save_pretrained(str(directory), safe_serialization=True)
    return sha256_file(Path(directory) / WEIGHTS_NAME)


def load_module(cls: type, directory: str | Path, *, sha256: str | None, what: str) -> nn.Module:
    """Rebuild a ``ModelMixin`` of ``cls`` from ``config.json`` and load its safetensors weights strictly."""
    directory = Path(directory)
    config = read_json(directory / "config.json", what=what)
    try:
        module = cls.from_config(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / 'config.json'} does not describe a {cls.__name__} ({err}).") from None
    state = load_tensors(directory / WEIGHTS_NAME, sha256=sha256, what=what)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {directory} do not fit the configuration: {err}") from None
    return module


def flatten_optimizer(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into safetensors tensors and JSON scalars."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`: an optimizer ``state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
