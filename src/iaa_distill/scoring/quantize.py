"""Int8 ONNX: static quantisation (onnxruntime.quantization, QDQ, per-channel int8 weights) of a student or a
teacher folder, calibrated on a few hundred photos, saved only when it keeps its ranking.

Calibration photos are a folder of the user's photos or a dataset's training images (seeded sample), through
the Scorer's own preprocessing. The drift against the fp32 export is measured on a labelled split when one is
given (SRCC of both against the labels, and the mean absolute score difference); without labels, on the
calibration photos, where the SRCC lost is 1 - SRCC(int8, fp32). Two schemes are tried in order (`SCHEMES`) and
the first within `max_srcc_drop` is saved: uint8 activations with 7-bit weights (`reduce_range`), which run ONNX
Runtime's fast u8 x s8 kernels (on an AVX2 CPU without VNNI 1.24x fp32's speed, where the 8-bit weights of the
u8 x s8 product can saturate), then symmetric int8 activations, which keep the ranking of more models but run at
0.85x fp32 there. Past the bound with both, nothing is saved.

What stays fp32: the first `fp32_early` of the convolutions (in graph order, with everything before them), the
MLSP pooling taps and everything after the last convolution (the head). The head reads every block's pooled
output, standardised, so it sees the early blocks' quantisation noise where a classifier would not. On a demo
student (SRCC drop on val / test, 30 % fp32): uint8 activations with 7-bit weights +0.0072 / -0.0079, symmetric
int8 -0.0040 / -0.0153; on an earlier demo student uint8 with 7-bit weights +0.030 / -0.008 (refused by the
default bound), symmetric int8 -0.0004 / 0.0009, and with no convolution kept fp32 0.091 / 0.097.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import IAAError
from .result import Result
from .scorer import Scorer

DEFAULT_MAX_SRCC_DROP = 0.01
CALIBRATION_IMAGES = 300
DEFAULT_FP32_EARLY = 0.3  # share of the convolutions, from the input on, kept in fp32
# the quantisation schemes, tried in this order: (activation type, 7-bit weights, symmetric activations)
SCHEMES = {"uint8 activations, 7-bit weights": ("QUInt8", True, False),
           "symmetric int8 activations": ("QInt8", False, True)}
POOLING_OPS = ("ReduceMean", "GlobalAveragePool", "Flatten", "Cast")  # the MLSP taps (the export writes GlobalAveragePool + Flatten)


@dataclass(frozen=True)
class Drift:
    """How far the int8 model's scores move from the fp32 model's on `images` photos of `where`."""

    where: str
    images: int
    srcc_fp32: float | None  # against the labels (None without labels)
    srcc_int8: float | None
    srcc_drop: float  # srcc_fp32 - srcc_int8, or 1 - SRCC(int8, fp32) without labels
    mean_abs_difference: float  # of the mean scores, on the model's scale
    scheme: str = ""  # which of `SCHEMES`

    def summary(self) -> str:
        against = (f"SRCC {self.srcc_fp32:.4f} fp32 -> {self.srcc_int8:.4f} int8 (drop {self.srcc_drop:+.4f})"
                   if self.srcc_fp32 is not None else f"SRCC lost against fp32's ranking {self.srcc_drop:.4f}")
        scheme = f"{self.scheme}: " if self.scheme else ""
        return (f"{scheme}{against}, mean |score difference| {self.mean_abs_difference:.4f} on {self.images} photos "
                f"of {self.where}")


def calibration_photos(spec: str, count: int = CALIBRATION_IMAGES, seed: int = 0) -> list[str]:
    """Up to `count` photos (a seeded sample) of a folder, or of a dataset's train split (`FORMAT:PATH`)."""
    from ..data.registry import open_dataset
    from .paths import collect_inputs

    if Path(spec).expanduser().is_dir():
        paths = collect_inputs([str(Path(spec).expanduser())]).paths
    else:
        records = open_dataset(spec).records
        paths = [str(r.path) for r in [r for r in records if r.split == "train"] or records]
    if not paths:
        raise IAAError(f"{spec}: no photos to calibrate on")
    chosen = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in sorted(chosen)]


def labelled_split(spec: str, split: str) -> tuple[list[str], np.ndarray]:
    """The paths and label means of one split of a labelled dataset."""
    from ..data.registry import open_dataset

    records = [r for r in open_dataset(spec).split(split) if r.label is not None]
    if len(records) < 3:
        raise IAAError(f"{spec}: its {split} split has {len(records)} labelled photos; drift needs at least 3")
    return [str(r.path) for r in records], np.array([r.label.mean for r in records])


class _Calibration:
    """onnxruntime's CalibrationDataReader over `batches` (model inputs, in the Scorer's preprocessing)."""

    def __init__(self, batches: Sequence[dict]):
        self.batches: Iterator = iter(batches)

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _calibration_inputs(scorer: Scorer, photos: Sequence[str], batch_size: int, workers: int) -> list[dict]:
    """The model inputs of the calibration photos, decoded once for every scheme tried."""
    name = scorer.backend.input_name
    return [{name: scorer.model_input(batch.images).numpy()}
            for _, batch in scorer.iter_inputs(photos, batch_size, workers) if batch.rows]


def quantize_onnx(model_dir: str | Path, out: str | Path, calibration: Sequence[str], *,
                  check: tuple[list[str], np.ndarray, str] | None = None, max_srcc_drop: float = DEFAULT_MAX_SRCC_DROP,
                  fp32_early: float = DEFAULT_FP32_EARLY, batch_size: int = 16, workers: int = 2) -> Drift:
    """Write the int8 model of `model_dir` to `out` (temp file + rename), in the first of `SCHEMES` within
    `max_srcc_drop`, and return its drift; IAAError, and nothing written, when every scheme drifts past it.
    check: (paths, label means, description) of a labelled split."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_cache import cached_onnx

    fp32 = cached_onnx(model_dir)
    if fp32 is None:
        raise IAAError(f"{model_dir}: its fp32 ONNX export could not be made (see the message above)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32_scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=fp32)
    photos, labels, where = check if check is not None else (list(calibration), None, "the calibration photos")
    refused = []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        inputs = _calibration_inputs(fp32_scorer, calibration, batch_size, workers)
        exclude = fp32_nodes(prepared, fp32_early)
        fp32_scores = fp32_scorer.score_paths(photos, batch_size, workers)
        for number, scheme in enumerate(SCHEMES):
            int8 = Path(tmp) / f"int8-{number}.onnx"
            _quantize(prepared, int8, _Calibration(inputs), scheme, exclude)
            int8_scorer = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=int8)
            drift = replace(measure_drift(fp32_scores, int8_scorer, photos, labels, where, batch_size, workers),
                            scheme=scheme)
            if drift.srcc_drop <= max_srcc_drop:
                os.replace(int8, out)
                return drift
            refused.append(drift.summary())
    raise IAAError(f"int8 model refused: {'; '.join(refused)}; the bound is an SRCC drop of {max_srcc_drop} "
                   "(--max-srcc-drop); try other calibration photos, or keep the fp32 model")


def _quantize(prepared: Path, out: Path, reader: _Calibration, scheme: str, exclude: list[str]) -> None:
    """onnxruntime's static QDQ quantisation of `prepared` in `scheme` (per-channel int8 weights, MinMax)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    activations, reduce_range, symmetric = SCHEMES[scheme]
    quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, weight_type=QuantType.QInt8,
                    activation_type=getattr(QuantType, activations), calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=exclude, extra_options={"ActivationSymmetric": symmetric})


def fp32_nodes(model: Path, early: float) -> list[str]:
    """The nodes kept in fp32: up to the first `early` share of the convolutions, the pooling taps, the head."""
    import onnx

    nodes = list(onnx.load(str(model)).graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    first_int8 = convs[min(len(convs) - 1, int(np.ceil(early * len(convs))))] if early > 0 else 0
    return [n.name for i, n in enumerate(nodes) if i < first_int8 or i > convs[-1] or n.op_type in POOLING_OPS]


def measure_drift(fp32: Sequence[Result], int8: Scorer, photos: Sequence[str], labels: np.ndarray | None,
                  where: str, batch_size: int = 16, workers: int = 2) -> Drift:
    """Score `photos` with the int8 model, against the fp32 model's results `fp32` on the same photos; SRCC
    against `labels` (or int8 against fp32) and mean |difference|."""
    from ..evaluation.metrics import srcc

    a, b = fp32, int8.score_paths(photos, batch_size, workers)
    ok = [i for i, (x, y) in enumerate(zip(a, b)) if x.ok and y.ok]
    if len(ok) < 3:
        raise IAAError(f"{where}: fewer than 3 photos could be scored to measure the int8 drift")
    ma, mb = np.array([a[i].mean for i in ok]), np.array([b[i].mean for i in ok])
    difference = float(np.abs(ma - mb).mean())
    if labels is None:
        return Drift(where, len(ok), None, None, 1.0 - srcc(ma, mb), difference)
    truth = np.asarray(labels)[ok]
    before, after = srcc(truth, ma), srcc(truth, mb)
    return Drift(where, len(ok), before, after, before - after, difference)
