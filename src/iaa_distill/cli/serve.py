"""Serve a trained student over HTTP (FastAPI + uvicorn).

POST /score with multipart field `files` (one or many images) returns a JSON list of
{file, mean, std, distribution}; GET /health describes the model; GET / is a page to drop photos on.
Uploads are limited in size, pixel count and type (checked from the content); at most
--max-concurrency requests run inference at once.
"""
from __future__ import annotations

import argparse

from .types import port, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="trained student folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-upload-mb", type=positive_float, default=20, help="largest accepted file in MB (default: 20)")
    parser.add_argument("--max-pixels", type=positive_int, help="largest accepted image in pixels (default: 60,000,000, half the limit of iaa score)")
    parser.add_argument("--max-files", type=positive_int, default=32, help="most images per request (default: 32)")
    parser.add_argument("--max-concurrency", type=positive_int, default=2, help="requests scored at the same time (default: 2)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference engine (default: torch)")
    parser.add_argument("--onnx", metavar="FILE", help="ONNX file for --backend onnx (default: DIR/model.onnx)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..scoring.server import SERVER_MAX_PIXELS, create_app

    max_pixels = SERVER_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    app = create_app(
        args.model, max_upload_mb=args.max_upload_mb, max_pixels=max_pixels, max_concurrency=args.max_concurrency,
        max_files=args.max_files, device=args.device, backend=args.backend, onnx_path=args.onnx,
    )
    uvicorn.run(app, host=args.host, port=args.port)
    return 0
