"""Export a trained model for deployment: `iaa export onnx --model DIR --out model.onnx`.

DIR is a student folder, or a teacher folder (accuracy mode: the frozen teachers and the teacher head in
one graph). A student's graph takes float RGB in [0, 1], N x 3 x S x S (dynamic N; normalisation is
inside); a teacher's takes one packed row per image (every teacher's own resize, joined; see the file's
`teacher_inputs` metadata). Both return `mean` (N,) and, for K-level models, `distribution` (N, K). The
preprocessing and the full model config are stored in its metadata, so
`iaa score --backend onnx --onnx model.onnx` and other onnxruntime users need nothing else.
"""
from __future__ import annotations

import argparse

from .types import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    onnx = formats.add_parser("onnx", help="ONNX for onnxruntime", description=__doc__.strip())
    onnx.add_argument("--model", required=True, metavar="DIR", help="trained student folder, or a teacher folder (accuracy mode)")
    onnx.add_argument("--out", metavar="FILE", help="output file (default: DIR/model.onnx)")
    onnx.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default: 17)")
    onnx.add_argument("--no-check", action="store_true", help="skip comparing onnxruntime with PyTorch on a random batch")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..scoring.onnx_export import DEFAULT_ONNX_NAME, export_onnx, verify_onnx

    out = Path(args.out) if args.out else Path(args.model) / DEFAULT_ONNX_NAME
    export_onnx(args.model, out, opset=args.opset)
    message = f"exported -> {out}"
    if not args.no_check:
        message += f" (max |mean score difference| vs PyTorch: {verify_onnx(args.model, out):.2e})"
    print(message)
    return 0
