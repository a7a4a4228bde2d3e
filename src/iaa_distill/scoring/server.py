"""HTTP service: `POST /score` (multipart field `files`), `GET /health`, `GET /` (drag-and-drop page).

Every upload is checked before inference: size per file (413), image type sniffed from the content,
not the name (415), pixel count and decodability (422). Errors are JSON `{"error": ..., "file": ...}`.
Decoding and inference run in worker threads, at most `max_concurrency` requests at a time.
"""
from __future__ import annotations

import asyncio
import io
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError

from ..artifacts import model_name
from ..errors import DecodeError
from ..imaging import DEFAULT_MAX_PIXELS, RASTER_FORMATS, decode_image, let_pil_open_up_to, too_many_pixels
from .scorer import Scorer

SERVER_MAX_PIXELS = DEFAULT_MAX_PIXELS // 2  # a service holds several uploads at once: half the CLI's limit
MULTIPART_OVERHEAD = 64 * 1024


class UploadError(Exception):
    """A rejected upload: HTTP status, message and the file it concerns."""

    def __init__(self, status: int, message: str, file: str = ""):
        super().__init__(message)
        self.status, self.message, self.file = status, message, file


def create_app(
    model_dir: str | Path | None,
    max_upload_mb: float = 20,
    max_pixels: int = SERVER_MAX_PIXELS,
    max_concurrency: int = 2,
    max_files: int = 32,
    device: str = "auto",
    backend: str = "torch",
    onnx_path: str | Path | None = None,
) -> FastAPI:
    """Build the app around a `Scorer` loaded once from `model_dir` (see `Scorer.from_pretrained`)."""
    scorer = Scorer.from_pretrained(model_dir, device=device, backend=backend, onnx_path=onnx_path, max_pixels=max_pixels)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    limiter = asyncio.Semaphore(max(1, max_concurrency))
    config = scorer.config
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="iaa-distill", description="Image aesthetics scores from a distilled student model.")

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "file": exc.file}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "expected a multipart/form-data upload with one or more images in the field 'files'", "file": ""},
            status_code=422,
        )

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if request.url.path == "/score" and length.isdigit() and int(length) > max_files * max_bytes + MULTIPART_OVERHEAD:
            return JSONResponse({"error": f"request too large (limit {max_files} files of {max_upload_mb:g} MB)", "file": ""}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name(model_dir) if model_dir else Path(str(onnx_path)).name,
            "backbone": config.backbone,
            "backend": scorer.backend.name,
            "scale": list(config.scale),
            "num_levels": config.num_levels,
            "input_size": config.input_size,
            "max_upload_mb": max_upload_mb,
            "max_files": max_files,
            "max_pixels": max_pixels,
        }

    @app.post("/score")
    async def score(files: list[UploadFile] = File(...)) -> list[dict]:
        if len(files) > max_files:
            raise UploadError(413, f"too many files: {len(files)} (limit {max_files} per request)")
        payloads = []
        for i, upload in enumerate(files):
            name = Path(upload.filename or "").name or f"upload {i + 1}"
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise UploadError(413, f"{name}: larger than the {max_upload_mb:g} MB limit per file", name)
            payloads.append((name, data))
        async with limiter:
            return await run_in_threadpool(_score_payloads, scorer, payloads, max_pixels)

    return app


def check_image(name: str, data: bytes, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Sniff the type from the bytes, then decode with the shared decoder (pixel limit included); raises UploadError."""
    let_pil_open_up_to(max_pixels)
    try:
        Image.open(io.BytesIO(data), formats=RASTER_FORMATS).close()
    except Image.DecompressionBombError:
        raise UploadError(422, too_many_pixels(name, max_pixels, "the image"), name) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(415, f"{name}: not a supported image (JPEG, PNG, WebP, BMP, TIFF or GIF content expected)", name) from None
    try:
        return decode_image(data, min_side=min_side, max_pixels=max_pixels, name=name)
    except DecodeError as exc:
        raise UploadError(422, str(exc), name) from None


def _score_payloads(scorer: Scorer, payloads: list[tuple[str, bytes]], max_pixels: int) -> list[dict]:
    images = [check_image(name, data, max_pixels, scorer.config.input_size) for name, data in payloads]
    results = scorer.score(images, names=[name for name, _ in payloads])
    return [
        {"file": r.path, "mean": d["mean"], "std": d["std"], "distribution": d["distribution"]}
        for r, d in ((r, r.to_dict()) for r in results)
    ]
