"""Export a student to ONNX: input `images` = float RGB in [0, 1], shape N x 3 x S x S (dynamic N).

Mean/std normalisation is inside the graph (the student's buffers). Outputs: `mean` (N,) on the
model's scale and, for K-level models, `distribution` (N, K). The whole student config and the
preprocessing (`input_size`, `interpolation`, `scale`, `num_levels`) are stored in the model's
metadata_props, so the .onnx file alone is enough to score with onnxruntime.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..student import Student, StudentConfig
from .onnx_metadata import DEFAULT_ONNX_NAME, metadata_props
from .scorer import Scorer

__all__ = ["DEFAULT_ONNX_NAME", "export_onnx", "verify_onnx"]


class _Predictor(nn.Module):
    """The exported graph: images in [0, 1] -> (mean, distribution) or (mean,)."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, images: torch.Tensor):
        mean, dist = self.student.predict(images)
        return (mean,) if dist is None else (mean, dist)


def export_onnx(model: Student | str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write `model` (a Student or a model folder) to `out` atomically; returns the path."""
    student = model if isinstance(model, Student) else Student.from_pretrained(model)
    config = student.config
    predictor = _Predictor(student).eval()
    outputs = ["mean"] + (["distribution"] if config.num_levels else [])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    example = torch.rand(2, 3, config.input_size, config.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            predictor,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
        )
    _add_metadata(tmp, config)
    os.replace(tmp, out)
    return out


def _add_metadata(path: Path, config: StudentConfig) -> None:
    import onnx

    proto = onnx.load(str(path))
    props = metadata_props(config)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "iaa-distill"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def verify_onnx(model_dir: str | Path, onnx_path: str | Path, batch: int = 3, seed: int = 0) -> float:
    """Max absolute difference of mean scores between PyTorch and onnxruntime on a random batch."""
    torch_scorer = Scorer.from_pretrained(model_dir, device="cpu")
    onnx_scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=onnx_path)
    size = torch_scorer.config.input_size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    a, _ = torch_scorer.predict_batch(images)
    b, _ = onnx_scorer.predict_batch(images)
    return float(abs(a - b).max())
