"""Serve a trained student over HTTP (FastAPI + uvicorn).

POST /score with multipart field `files` (one or many images), or one image as the raw body (Content-Type
image/jpeg, ...; ?name=photo.jpg), returns {"results": [{path, mean, std, distribution, embedding, error}]}
(one Result per file, as `iaa score` prints them); GET /health describes the model; GET / is a page to drop photos on; the OpenAPI
schema is at /openapi.json. Uploads are limited in size (while they stream in), read time, pixel count and
type (checked from the content); at most --max-uploads requests upload and --max-concurrency run inference
at once; connections that do not send their request headers within --header-timeout are closed.
"""
from __future__ import annotations

import argparse

from .types import add_engine_options, port, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="trained student folder, a teacher folder (accuracy mode), or a hub name org/name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-upload-mb", type=positive_float, default=20, help="largest accepted file in MB (default: 20)")
    parser.add_argument("--max-pixels", type=positive_int, help="largest accepted image in pixels (default: 60,000,000, half the limit of iaa score)")
    parser.add_argument("--max-files", type=positive_int, default=32, help="most images per request (default: 32)")
    parser.add_argument("--max-concurrency", type=positive_int, default=2, help="requests scored at the same time (default: 2)")
    parser.add_argument("--max-uploads", type=positive_int,
                        help="requests receiving their upload at the same time (default: 4 x --max-concurrency)")
    parser.add_argument("--read-timeout", type=positive_float, default=60.0,
                        help="seconds a request may take to send its whole upload (default: %(default)s)")
    parser.add_argument("--header-timeout", type=positive_float, default=10.0,
                        help="seconds a connection may take to send its request headers (default: %(default)s)")
    parser.add_argument("--keep-alive", type=positive_int, default=5,
                        help="seconds an idle connection stays open between requests (default: %(default)s)")
    add_engine_options(parser)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..scoring.guard import HeaderTimeoutProtocol
    from ..scoring.server import SERVER_MAX_PIXELS, create_app

    max_pixels = SERVER_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    app = create_app(
        args.model, max_upload_mb=args.max_upload_mb, max_pixels=max_pixels, max_concurrency=args.max_concurrency,
        max_files=args.max_files, device=args.device, backend=args.backend, onnx_path=args.onnx,
        max_uploads=args.max_uploads, read_timeout=args.read_timeout,
    )
    HeaderTimeoutProtocol.header_timeout = args.header_timeout
    uvicorn.run(app, host=args.host, port=args.port, http=HeaderTimeoutProtocol, timeout_keep_alive=args.keep_alive)
    return 0
