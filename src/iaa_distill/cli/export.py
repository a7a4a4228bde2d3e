"""Export a trained model for deployment: `iaa export onnx --model DIR --out model.onnx`.

DIR is a student folder, or a teacher folder (accuracy mode: the frozen teachers and the teacher head in
one graph). A student's graph takes float RGB in [0, 1], N x 3 x S x S (dynamic N; normalisation is
inside); a teacher's takes one packed row per image (every teacher's own resize, joined; see the file's
`teacher_inputs` metadata). Both return `mean` (N,) and, for K-level models, `distribution` (N, K). The
preprocessing and the full model config are stored in its metadata, so
`iaa score --backend onnx --onnx model.onnx` and other onnxruntime users need nothing else.

--int8 writes a statically quantised model (DIR/model-int8.onnx by default) calibrated on --calibration
(a folder of your photos, or a dataset whose train split is used: FORMAT:PATH). Some of those photos are held
out, and on them the int8 model's ranking is compared with the fp32 model's (the SRCC it loses, no labels
needed); with --check DATASET its SRCC drop against the labels of that dataset's --check-split is checked too.
The fastest scheme within --max-rank-loss (and --max-srcc-drop) is written; past them, nothing is. Every int8
convolution's bias is corrected for the mean error of its 7-bit weights. The message gives the saved model's
speed against fp32 on this machine (1 thread), and says so when it is not faster: then keep the fp32 model.
"""
from __future__ import annotations

import argparse

from .types import fraction, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    onnx = formats.add_parser("onnx", help="ONNX for onnxruntime", description=__doc__.strip())
    onnx.add_argument("--model", required=True, metavar="DIR", help="trained student folder, or a teacher folder (accuracy mode)")
    onnx.add_argument("--out", metavar="FILE", help="output file (default: DIR/model.onnx)")
    onnx.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default: 17)")
    onnx.add_argument("--no-check", action="store_true", help="skip comparing onnxruntime with PyTorch on a random batch")
    int8 = onnx.add_argument_group("int8 (static quantisation)")
    int8.add_argument("--int8", action="store_true", help="write an int8 model calibrated on --calibration")
    int8.add_argument("--calibration", metavar="DIR|DATASET", help="photos to calibrate on: a folder, or a dataset's train split")
    int8.add_argument("--calibration-images", type=positive_int, default=300, help="photos sampled for calibration (default: 300)")
    int8.add_argument("--held-out-images", type=positive_int, default=300,
                      help="photos held out to compare the int8 ranking with fp32's (default: 300, at most a third)")
    int8.add_argument("--check", metavar="DATASET", help="labelled dataset on which the drift against fp32 is measured")
    int8.add_argument("--check-split", default="val", choices=("train", "val", "test"), help="its split (default: val)")
    int8.add_argument("--fp32-early", type=fraction, default=0.3,
                      help="share of the convolutions of each backbone, from its input on, kept in fp32 (default: 0.3)")
    int8.add_argument("--max-rank-loss", type=fraction, default=0.001,
                      help="refuse a scheme whose 1 - SRCC(int8, fp32) on the held-out photos is above this (default: 0.001)")
    int8.add_argument("--max-srcc-drop", type=fraction, default=0.01,
                      help="refuse a scheme that loses more SRCC than this against the --check labels (default: 0.01)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..scoring.onnx_export import DEFAULT_ONNX_NAME, export_onnx, verify_onnx

    if args.int8:
        return _int8(args)
    out = Path(args.out) if args.out else Path(args.model) / DEFAULT_ONNX_NAME
    export_onnx(args.model, out, opset=args.opset)
    message = f"exported -> {out}"
    if not args.no_check:
        message += f" (max |mean score difference| vs PyTorch: {verify_onnx(args.model, out):.2e})"
    print(message)
    return 0


def _int8(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import IAAError
    from ..scoring.quantize import calibration_photos, labelled_split, quantize_onnx

    if not args.calibration:
        raise IAAError("--int8 needs --calibration DIR (your photos) or a dataset (FORMAT:PATH) whose train split is used")
    out = Path(args.out) if args.out else Path(args.model) / "model-int8.onnx"
    photos, held_out = calibration_photos(args.calibration, args.calibration_images, args.held_out_images)
    check = None
    if args.check:
        paths, labels = labelled_split(args.check, args.check_split)
        check = (paths, labels, f"the {args.check_split} split of {args.check}")
    drift = quantize_onnx(args.model, out, photos, held_out, check=check, max_srcc_drop=args.max_srcc_drop,
                          max_rank_loss=args.max_rank_loss, fp32_early=args.fp32_early)
    print(f"int8 -> {out} (calibrated on {len(photos)} photos; {drift.summary()})")
    return 0
