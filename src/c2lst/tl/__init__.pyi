"""Tools: central pretraining, local adaptation, generation, prediction, evaluation."""
from ._adapt import adapt
from ._conditioning import evaluate_conditioning
from ._evaluate import evaluate, evaluate_synthetic
from ._generate import generate
from ._pipeline import run
from ._predict import predict
from ._predict_slide import predict_slide
from ._pretrain import pretrain

__all__ = [
    "adapt",
    "evaluate",
    "evaluate_conditioning",
    "evaluate_synthetic",
    "generate",
    "predict",
    "predict_slide",
    "pretrain",
    "run",
]
