"""Using a trained model: the `Scorer` API and its `Result`, batch scoring to CSV/JSONL/JSON, embeddings, HTML
gallery, ONNX export, hub names and the HTTP service."""
from .result import Result
from .scorer import Scorer, ScoreResult

__all__ = ["Scorer", "Result", "ScoreResult"]
