"""Export a student or a teacher (accuracy mode) to ONNX; the batch size N is dynamic.

A student takes `images` = float RGB in [0, 1], N x 3 x S x S. A teacher takes `packed_images`, N x D: each
image's whole-image resize for every teacher, flattened and joined (`teachers.PackedInputs`), so the file
stays usable alone; the metadata lists the teachers' sizes and interpolations in order. The MLSP hooks end
each teacher's forward early with an exception: tracing records the operations that ran, so the graph stops
there too. Mean/std normalisation is inside the graph (the models' buffers). Outputs: `mean` (N,) on the
model's scale, for K-level models `distribution` (N, K), then `embedding` (N, F), the aesthetic feature. The whole student config and the
preprocessing (`input_size`, `interpolation`, `scale`, `num_levels`) are stored in the model's
metadata_props, so the .onnx file alone is enough to score with onnxruntime.

Two rewrites make the graph one that ONNX Runtime runs in its blocked (NCHWc) layout throughout, with the same
outputs: TensorFlow-"same" convolutions (timm's `Conv2dSame`, which pads by amounts computed from the input's
size at every call) pad by the constants of the exported input size, so ONNX Runtime folds each pad into its
convolution instead of copying the feature map; and the MLSP taps' mean over height and width is written as
`GlobalAveragePool`, which runs in the blocked layout, where `ReduceMean` needed every block's output converted
back to NCHW. On the default student (lite0, 224 px, one thread) the pads and those conversions were 24 % of
its time.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import atomic_file
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
    shape = input_shape(config)
    predictor = _Predictor(model).eval()
    outputs = ["mean"] + (["distribution"] if config.num_levels else []) + [EMBEDDING_OUTPUT]
    out = Path(out)
    example = torch.rand(2, *shape)
    input_name = "packed_images" if isinstance(model, TeacherScorerModel) else "images"
    # a temporary name of its own (concurrent exports never share one), renamed over `out` once finished
    with atomic_file(out) as tmp, warnings.catch_warnings(), _static_padding(predictor.model, shape):
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
        _finish(tmp, config)
    return out


@contextlib.contextmanager
def _static_padding(model: nn.Module, shape: tuple[int, ...]) -> Iterator[None]:
    """While exporting, `model`'s `Conv2dSame` layers pad by constants: the amounts for the input size each sees
    when the model takes one input of `shape` (the only size the export takes). Layers that input never reaches
    (after the last MLSP block) stay as they are; on leaving, every layer is as before."""
    from timm.layers import Conv2dSame

    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    sizes: dict[nn.Module, tuple[int, int]] = {}
    hooks = [c.register_forward_pre_hook(lambda c, args: sizes.update({c: tuple(args[0].shape[-2:])})) for c in convs]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        for hook in hooks:
            hook.remove()
    for conv, (height, width) in sizes.items():
        conv.forward = functools.partial(_padded_conv, conv, _same_pads(conv, height, width))
    try:
        yield
    finally:
        for conv in sizes:
            del conv.forward


def _same_pads(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int, int, int]:
    """timm's `pad_same` amounts (left, right, top, bottom) for an input of height x width."""
    from timm.layers.padding import get_same_padding

    pad_h, pad_w = (get_same_padding(size, k, s, d) for size, k, s, d in
                    zip((height, width), conv.kernel_size, conv.stride, conv.dilation))
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _padded_conv(conv: nn.Conv2d, pads: tuple[int, int, int, int], x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, pads), conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def _global_pools(proto) -> None:
    """Rewrite every `ReduceMean` over axes 2, 3 of a 4-D tensor without kept dims (an MLSP tap) as
    `GlobalAveragePool` + `Flatten`: the same values, in ONNX Runtime's blocked layout."""
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.graph.value_info, *inferred.graph.input]
             if v.type.tensor_type.HasField("shape")}
    nodes = []
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "ReduceMean" and list(attrs.get("axes", [])) == [2, 3] and attrs.get("keepdims") == 0 \
                and ranks.get(node.input[0]) == 4:
            pooled = f"{node.output[0]}/global_pool"
            nodes += [helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=f"{node.name}/global_pool"),
                      helper.make_node("Flatten", [pooled], list(node.output), name=f"{node.name}/flatten", axis=1)]
        else:
            nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _fusable_pads(proto) -> None:
    """Drop the empty optional `constant_value` input (zero) that the exporter writes on every `Pad`: ONNX Runtime
    folds a zero pad into the convolution after it only when that input is absent or a constant."""
    for node in proto.graph.node:
        if node.op_type == "Pad" and len(node.input) == 3 and node.input[2] == "":
            del node.input[2]


def _finish(path: Path, config: ScoringConfig) -> None:
    """The graph rewrites (`_global_pools`, `_fusable_pads`), then the model's metadata."""
    import onnx

    proto = onnx.load(str(path))
    _global_pools(proto)
    _fusable_pads(proto)
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
