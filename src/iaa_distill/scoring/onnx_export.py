"""Export a student or a teacher (accuracy mode) to ONNX; the batch size N is dynamic.

A student takes `images` = float RGB in [0, 1], N x 3 x S x S. A teacher takes `packed_images`, N x D: each
image's whole-image resize for every teacher, flattened and joined (`teachers.PackedInputs`), so the file
stays usable alone; the metadata lists the teachers' sizes and interpolations in order. The MLSP hooks end
each teacher's forward early with an exception: tracing records the operations that ran, so the graph stops
there too. Mean/std normalisation is inside the graph (the models' buffers). Outputs: `mean` (N,) on the
model's scale, for K-level models `distribution` (N, K), then `embedding` (N, F), the aesthetic feature. The whole student config and the
preprocessing (`input_size`, `interpolation`, `scale`, `num_levels`) are stored in the model's
metadata_props, so the .onnx file alone is enough to score with onnxruntime.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from ..student import Student
from ..teacher_model import TeacherScorerModel
from .onnx_metadata import DEFAULT_ONNX_NAME, EMBEDDING_OUTPUT, metadata_props
from .scorer import Scorer, ScoringConfig, input_shape, load_scoring_model

__all__ = ["DEFAULT_ONNX_NAME", "export_onnx", "verify_onnx"]


class _Predictor(nn.Module):
    """The exported graph: images in [0, 1] -> (mean, distribution, embedding) or (mean, embedding)."""

    def __init__(self, model: Student | TeacherScorerModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        raw, feature = self.model(images)
        mean, dist = self.model.config.space.decode(raw)
        return (mean, feature) if dist is None else (mean, dist, feature)


def export_onnx(model: Student | TeacherScorerModel | str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write `model` (a Student, a TeacherScorerModel or a model folder) to `out` atomically; returns the path."""
    model = model if isinstance(model, nn.Module) else load_scoring_model(model)
    config = model.config
    predictor = _Predictor(model).eval()
    outputs = ["mean"] + (["distribution"] if config.num_levels else []) + [EMBEDDING_OUTPUT]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # concurrent exports never share one
    shape = input_shape(config)
    example = torch.rand(2, *shape)
    input_name = "packed_images" if isinstance(model, TeacherScorerModel) else "images"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                predictor,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [input_name, *outputs]},
            )
            _add_metadata(tmp, config)
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _add_metadata(path: Path, config: ScoringConfig) -> None:
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
    torch_scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="torch")
    onnx_scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=onnx_path)
    images = torch.rand(batch, *torch_scorer.output_shape, generator=torch.Generator().manual_seed(seed))
    a, _ = torch_scorer.predict_batch(images)
    b, _ = onnx_scorer.predict_batch(images)
    return float(abs(a - b).max())
