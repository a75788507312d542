"""Tools: central pretraining, local adaptation, generation, prediction, evaluation."""
from __future__ import annotations

from ._adapt import adapt
from ._evaluate import evaluate
from ._generate import generate
from ._pipeline import run
from ._predict import predict
from ._pretrain import pretrain

__all__ = ["adapt", "evaluate", "generate", "predict", "pretrain", "run"]
