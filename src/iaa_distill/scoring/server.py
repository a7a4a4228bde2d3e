"""HTTP service: `POST /score` (multipart field `files`, or one image as the raw body: `Content-Type: image/jpeg`
and an optional `?name=`), `GET /health`, `GET /` (drag-and-drop page). Answers carry one `Result` per file.

Every upload is checked before inference: the whole request body is limited while it streams in (413),
must arrive within a read deadline (408), and at most `max_uploads` requests upload at once (503). Each
file is checked for size (413), type sniffed from the content, not the name (415), pixel count and
decodability (422). A request with one file answers its error with that status; a request with several
answers 200 with one result per file, failed files carrying their `error`. Every error is JSON
`{"error": ..., "file": ...}`, 404 and 405 included. Decoding and inference run in worker threads, at most
`max_concurrency` requests at a time; the pixels being decoded, across all requests, stay within
`pixel_budget` (a file waits for its pixels before it is decoded, so memory stays bounded whatever the
uploads), and a body slower than `min_upload_kbps` on average, or more than `per_client` uploads at once
from one address, is refused, so slow clients cannot hold the upload slots of the others. The OpenAPI
schema is at /openapi.json; /docs and /redoc are off because Swagger UI and ReDoc load their code from a
CDN, which an offline service cannot reach.
"""
from __future__ import annotations

import asyncio
import io
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException

from ..artifacts import SYNTHETIC_NOTE, labels_are_synthetic, model_name
from ..errors import DecodeError
from ..imaging import DEFAULT_MAX_PIXELS, RASTER_FORMATS, decode_image, let_pil_open_up_to, too_many_pixels
from .guard import PixelBudget, UploadGuard
from .scorer import Scorer

SERVER_MAX_PIXELS = DEFAULT_MAX_PIXELS // 2  # a service holds several uploads at once: half the CLI's limit
MULTIPART_OVERHEAD = 64 * 1024
READ_TIMEOUT_S = 60.0
PIXEL_BUDGET = 64_000_000  # decoded at once by all requests: about 0.5 GB of RGB buffers, one 7700 x 7700 image
MIN_UPLOAD_KBPS = 16.0  # after 2 s of grace; a 1 KB/s client is cut off there


class UploadError(Exception):
    """A rejected upload: HTTP status, message and the file it concerns."""

    def __init__(self, status: int, message: str, file: str = ""):
        super().__init__(message)
        self.status, self.message, self.file = status, message, file


class ErrorBody(BaseModel):
    error: str
    file: str = ""


class FileScore(BaseModel):
    """One file's `Result` (scoring.result), field for field."""

    path: str
    mean: float | None
    std: float | None
    distribution: list[float] | None
    embedding: list[float] | None = None
    error: str = ""


class ScoreBody(BaseModel):
    results: list[FileScore]


class Health(BaseModel):
    status: str
    model: str
    backbone: str
    backend: str
    scale: list[float]
    num_levels: int | None
    input_size: int
    max_upload_mb: float
    max_files: int
    max_pixels: int
    synthetic_labels: bool
    warning: str


ERRORS = {code: {"model": ErrorBody} for code in (408, 413, 415, 422, 503)}
_BINARY = {"type": "string", "format": "binary"}
SCORE_REQUEST = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"],
                                       "properties": {"files": {"type": "array", "items": _BINARY}}}},
    "image/*": {"schema": _BINARY},
}}}


def create_app(
    model_dir: str | Path | None,
    max_upload_mb: float = 20,
    max_pixels: int = SERVER_MAX_PIXELS,
    max_concurrency: int = 2,
    max_files: int = 32,
    device: str = "auto",
    backend: str = "auto",
    onnx_path: str | Path | None = None,
    max_uploads: int | None = None,
    read_timeout: float = READ_TIMEOUT_S,
    pixel_budget: int = PIXEL_BUDGET,
    min_upload_kbps: float = MIN_UPLOAD_KBPS,
    per_client: int | None = None,
) -> FastAPI:
    """Build the app around a `Scorer` loaded once from `model_dir` (see `Scorer.from_pretrained`).

    max_uploads: requests receiving their body at the same time (default: 16 x max_concurrency), at most
    `per_client` from one address (default: no such limit; behind a proxy every client has its address).
    read_timeout: seconds a request may take to send its whole body; after 2 s it must average
    `min_upload_kbps` (0: no minimum). pixel_budget: decoded pixels in flight at once.
    """
    scorer = Scorer.from_pretrained(model_dir, device=device, backend=backend, onnx_path=onnx_path, max_pixels=max_pixels)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    limiter = asyncio.Semaphore(max(1, max_concurrency))
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="iaa-distill", description="Image aesthetics scores from a distilled student model.",
                  docs_url=None, redoc_url=None)
    app.add_middleware(UploadGuard, max_body=max_files * max_bytes + MULTIPART_OVERHEAD,
                       max_uploads=max_uploads or 16 * max(1, max_concurrency), read_timeout=read_timeout,
                       limit_text=f"{max_files} files of {max_upload_mb:g} MB", per_client=per_client,
                       min_rate=min_upload_kbps * 1024)
    budget = PixelBudget(pixel_budget)
    _add_error_handlers(app)
    health_body = _health(scorer, model_name(model_dir) if model_dir else Path(str(onnx_path)).name,
                          max_upload_mb=max_upload_mb, max_files=max_files, max_pixels=max_pixels)

    @app.get("/", response_class=HTMLResponse, summary="Web page: drop photos to score them")
    async def index() -> str:
        return page

    @app.get("/health", summary="The model, its scale and the upload limits")
    async def health() -> Health:
        return health_body

    @app.post("/score", summary="Score images: multipart field 'files' (one or more), or one raw image body "
              "(Content-Type image/*, ?name=photo.jpg)", responses=ERRORS, openapi_extra=SCORE_REQUEST)
    async def score(request: Request) -> ScoreBody:
        payloads = await _read_uploads(request, max_files, max_bytes)
        async with limiter:  # each file is read from its spooled upload only when its pixels are reserved
            results = await run_in_threadpool(_score_payloads, scorer, payloads, max_pixels, max_bytes, budget)
        if len(results) == 1 and results[0].error:
            raise results[0].error_detail
        return ScoreBody(results=[r.body for r in results])

    return app


def _health(scorer: Scorer, model: str, **limits: Any) -> Health:
    """What `/health` answers: the model, its scale and engine, and the upload limits."""
    synthetic = labels_are_synthetic(scorer.config)
    return Health(status="ok", model=model, backbone=scorer.config.backbone, backend=scorer.backend.name,
                  scale=list(scorer.config.scale), num_levels=scorer.config.num_levels,
                  input_size=scorer.config.input_size, synthetic_labels=synthetic,
                  warning=f"this model was {SYNTHETIC_NOTE}" if synthetic else "", **limits)


async def _read_uploads(request: Request, max_files: int, max_bytes: int) -> list[tuple[str, BinaryIO]]:
    """(name, file to read) of every uploaded file (multipart files stay in their spool until decoded): the multipart field `files`, or the whole body of an image/* or
    application/octet-stream request (named by ?name=, read no further than the per-file limit)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        name = Path(request.query_params.get("name", "")).name or "upload 1"
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_bytes:
                break
        return [(name, io.BytesIO(bytes(data)))]
    files = []
    if kind == "multipart/form-data":
        form = await request.form()
        files = [item for item in form.getlist("files") if isinstance(item, StarletteUpload)]
    if not files:
        raise UploadError(422, "expected a multipart/form-data upload with one or more images in the field 'files', "
                          "or one image as the raw body (Content-Type: image/jpeg, image/png, ...)")
    if len(files) > max_files:
        raise UploadError(413, f"too many files: {len(files)} (limit {max_files} per request)")
    return [(Path(upload.filename or "").name or f"upload {i + 1}", upload.file) for i, upload in enumerate(files)]


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, FastAPI's and Starlette's included, answers `{"error", "file"}`."""

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "file": exc.file}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "expected a multipart/form-data upload with one or more images in the field 'files'", "file": ""},
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: f"no such page: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": message.get(exc.status_code, str(exc.detail)), "file": ""},
                            status_code=exc.status_code, headers=exc.headers)


class _Outcome:
    """One file's result, or the UploadError that rejected it."""

    def __init__(self, body: FileScore, error_detail: UploadError | None = None):
        self.body, self.error_detail = body, error_detail

    @property
    def error(self) -> bool:
        return self.error_detail is not None


def image_pixels(name: str, data: bytes, max_pixels: int) -> int:
    """Sniff the type from the bytes and read the pixel count from the header; raises UploadError."""
    let_pil_open_up_to(max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as img:
            return img.width * img.height
    except Image.DecompressionBombError:
        raise UploadError(422, too_many_pixels(name, max_pixels, "the image"), name) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(415, f"{name}: not a supported image (JPEG, PNG, WebP, BMP, TIFF or GIF content expected)", name) from None


def check_image(name: str, data: bytes, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Sniff the type from the bytes, then decode with the shared decoder (pixel limit included); raises UploadError."""
    image_pixels(name, data, max_pixels)
    try:
        return decode_image(data, min_side=min_side, max_pixels=max_pixels, name=name)
    except DecodeError as exc:
        raise UploadError(422, str(exc), name) from None


def _failed(name: str, exc: UploadError) -> _Outcome:
    return _Outcome(FileScore(path=name, mean=None, std=None, distribution=None, error=exc.message), exc)


def _score_payloads(scorer: Scorer, payloads: list[tuple[str, BinaryIO]], max_pixels: int, max_bytes: int,
                    budget: PixelBudget) -> list[_Outcome]:
    """Check and score each file within the pixel budget; a rejected file becomes a failed result and never
    hides the others. Decoded images are scored in batches that fit the budget; before waiting for more
    pixels, a request scores what it holds and gives its pixels back (no two requests wait on each other)."""
    outcomes: list[_Outcome | None] = [None] * len(payloads)
    batch: list[tuple[int, Image.Image, str]] = []
    held = 0

    def flush() -> None:
        nonlocal held
        scored = scorer.score([b[1] for b in batch], names=[b[2] for b in batch], errors="collect") if batch else []
        for (i, _, _), result in zip(batch, scored):
            outcomes[i] = _Outcome(FileScore(**result.to_dict()))
        batch.clear()
        budget.release(held)
        held = 0

    try:
        for i, (name, file) in enumerate(payloads):
            try:
                data = file.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise UploadError(413, f"{name}: larger than the {max_bytes / 1024 / 1024:g} MB limit per file", name)
                pixels = image_pixels(name, data, max_pixels)
                if budget.free < min(pixels, budget.total):
                    flush()
                reserved = budget.reserve(pixels)
                if not reserved:
                    raise UploadError(503, f"{name}: the service is busy decoding other uploads; try again in a moment", name)
                held += reserved
                batch.append((i, check_image(name, data, max_pixels, scorer.config.input_size), name))
            except UploadError as exc:
                outcomes[i] = _failed(name, exc)
        flush()
    finally:
        budget.release(held)
    return outcomes
