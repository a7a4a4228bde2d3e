"""Using a trained student: the `Scorer` API, batch scoring to CSV/JSONL, HTML gallery, ONNX export and the HTTP service."""
from .scorer import Scorer, ScoreResult

__all__ = ["Scorer", "ScoreResult"]
