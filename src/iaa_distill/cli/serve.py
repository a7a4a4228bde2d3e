"""Serve a trained student, or a teacher folder (accuracy mode), over HTTP (FastAPI + uvicorn).

POST /score with multipart field `files` (one or many images), or one image as the raw body (Content-Type
image/jpeg, ...; ?name=photo.jpg), returns {"results": [{path, mean, std, distribution, embedding, error}]}
(one Result per file, as `iaa score` prints them); GET /health describes the model; GET / is a page to drop photos on; the OpenAPI
schema is at /openapi.json. Uploads are limited in size (while they stream in), read time, pixel count and
type (checked from the content); at most --max-uploads requests upload (--per-client from one address),
each at least --min-upload-kbps, and --max-concurrency run inference at once, decoding within --pixel-budget;
connections that do not send their request headers within --header-timeout are closed.
"""
from __future__ import annotations

import argparse

from .types import add_engine_options, bounded, port, positive_float, positive_int

non_negative_float = bounded(float, 0.0, float("inf"), "a number >= 0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="trained student folder, a teacher folder (accuracy mode), or a hub name org/name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-upload-mb", type=positive_float, default=20, help="largest accepted file in MB (default: 20)")
    parser.add_argument("--max-pixels", type=positive_int, help="largest accepted image in pixels (default: 60,000,000, half the limit of iaa score)")
    parser.add_argument("--max-files", type=positive_int, default=32, help="most images per request (default: 32)")
    parser.add_argument("--max-concurrency", type=positive_int, default=2, help="requests scored at the same time (default: 2)")
    parser.add_argument("--max-uploads", type=positive_int,
                        help="requests receiving their upload at the same time (default: 16 x --max-concurrency)")
    parser.add_argument("--per-client", type=positive_int,
                        help="of those, most from one client address (default: no limit; behind a proxy all share one)")
    parser.add_argument("--min-upload-kbps", type=non_negative_float,
                        help="after 2 s an upload must average this many KB/s, or it is cut off (0: no minimum; default: 16)")
    parser.add_argument("--pixel-budget", type=positive_int,
                        help="decoded pixels held by all requests at once; bounds memory (default: 64,000,000)")
    parser.add_argument("--read-timeout", type=positive_float, default=60.0,
                        help="seconds a request may take to send its whole upload (default: %(default)s)")
    parser.add_argument("--header-timeout", type=positive_float, default=10.0,
                        help="seconds a connection may take to send its request headers (default: %(default)s)")
    parser.add_argument("--keep-alive", type=positive_int, default=5,
                        help="seconds an idle connection stays open between requests (default: %(default)s)")
    add_engine_options(parser)


def check_address(host: str, port: int) -> None:
    """IAAError in one line when `host:port` cannot be listened on (in use, not an address of this machine, a
    privileged port), before the model is loaded; uvicorn would log a traceback-like error and exit 3."""
    import socket

    from ..errors import IAAError

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise IAAError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..scoring.guard import HeaderTimeoutProtocol
    from ..scoring.server import MIN_UPLOAD_KBPS, PIXEL_BUDGET, SERVER_MAX_PIXELS, create_app

    check_address(args.host, args.port)
    max_pixels = SERVER_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    app = create_app(
        args.model, max_upload_mb=args.max_upload_mb, max_pixels=max_pixels, max_concurrency=args.max_concurrency,
        max_files=args.max_files, device=args.device, backend=args.backend, onnx_path=args.onnx,
        max_uploads=args.max_uploads, read_timeout=args.read_timeout, pixel_budget=args.pixel_budget or PIXEL_BUDGET,
        min_upload_kbps=MIN_UPLOAD_KBPS if args.min_upload_kbps is None else args.min_upload_kbps, per_client=args.per_client,
    )
    HeaderTimeoutProtocol.header_timeout = args.header_timeout
    uvicorn.run(app, host=args.host, port=args.port, http=HeaderTimeoutProtocol, timeout_keep_alive=args.keep_alive)
    return 0
