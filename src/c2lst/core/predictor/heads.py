"""Regression heads: ``"ridge"`` (:mod:`.ridge`) and a two-layer perceptron."""
from __future__ import annotations

import torch
from torch import nn

HEADS = ("ridge", "mlp")


class MLPHead(nn.Module):
    """Two-layer perceptron head: ``Linear -> GELU -> Dropout -> Linear``."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised features -> standardised targets."""
        return self.net(x)
