"""Issue 13, the service: bodies limited while they stream, stalled uploads and headers timed out, concurrent
uploads bounded, one error shape for every status, offline-safe docs, synthetic labels announced."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from iaa_distill.scoring.guard import HeaderTimeoutProtocol
from iaa_distill.scoring.server import create_app

pytestmark = pytest.mark.usefixtures("single_thread")
BOUNDARY = "x-boundary"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def app(model_dir):
    return create_app(model_dir, device="cpu", max_upload_mb=1, max_files=2, max_concurrency=1, max_uploads=1,
                      read_timeout=0.5)


def _scope() -> dict:
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
               (b"transfer-encoding", b"chunked")]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/score", "raw_path": b"/score", "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def _call(app, receive) -> tuple[int, dict]:
    sent = []

    async def send(message):
        sent.append(message)

    await app(_scope(), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit(app):
    chunks = 0
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"huge.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    async def receive():  # an endless upload without Content-Length: 700 MB would have been spooled to disk
        nonlocal chunks
        chunks += 1
        return {"type": "http.request", "body": head if chunks == 1 else b"\xff" * MB, "more_body": True}

    status, body = asyncio.run(_call(app, receive))
    assert status == 413 and "request too large" in body["error"] and set(body) == {"error", "file"}
    assert chunks <= 4, f"read {chunks} chunks of 1 MB for a 2 MB limit"


def test_a_stalled_upload_gets_408_after_the_read_deadline(app):
    calls = 0

    async def receive():
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": f"--{BOUNDARY}\r\n".encode(), "more_body": True}
        await asyncio.sleep(3600)

    started = time.monotonic()
    status, body = asyncio.run(_call(app, receive))
    assert status == 408 and "not completed within 0.5 s" in body["error"]
    assert time.monotonic() - started < 5


def test_concurrent_uploads_are_bounded(app):
    async def scenario():
        release = asyncio.Event()

        async def slow_receive():
            await release.wait()
            return {"type": "http.request", "body": b"", "more_body": False}

        first = asyncio.create_task(_call(app, slow_receive))
        await asyncio.sleep(0.05)
        second = await _call(app, slow_receive)
        release.set()
        await first
        return second

    status, body = asyncio.run(scenario())
    assert status == 503 and "too many uploads" in body["error"]


def test_every_error_has_one_shape_and_docs_are_offline_safe(app):
    with TestClient(app) as client:
        for response, status in ((client.get("/nope"), 404), (client.get("/score"), 405), (client.get("/docs"), 404),
                                 (client.post("/score", content=b"x" * (3 * MB)), 413)):
            assert response.status_code == status and set(response.json()) == {"error", "file"}, response.text
        schema = client.get("/openapi.json").json()
    assert {"FileScore", "ScoreBody", "Health", "ErrorBody"} <= set(schema["components"]["schemas"])
    assert schema["paths"]["/score"]["post"]["summary"] and schema["paths"]["/health"]["get"]["summary"]
    assert "413" in schema["paths"]["/score"]["post"]["responses"]


def test_synthetic_labels_are_announced(model_dir, tmp_path):
    synthetic = tmp_path / "demo-model"
    synthetic.mkdir()
    for item in Path(model_dir).iterdir():
        if item.is_file():  # not the ONNX export cached beside it
            (synthetic / item.name).write_bytes(item.read_bytes())
    config = json.loads((synthetic / "config.json").read_text())
    (synthetic / "config.json").write_text(json.dumps({**config, "synthetic_labels": True}))
    with TestClient(create_app(synthetic, device="cpu")) as client:
        health = client.get("/health").json()
        page = client.get("/").text
    assert health["synthetic_labels"] is True and "SYNTHETIC" in health["warning"]
    assert 'id="warning"' in page and "h.synthetic_labels" in page
    with TestClient(create_app(model_dir, device="cpu")) as client:
        assert client.get("/health").json()["synthetic_labels"] is False


def test_connections_that_stall_before_their_headers_are_closed(app):
    import uvicorn

    class QuickTimeout(HeaderTimeoutProtocol):
        header_timeout = 0.5

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=QuickTimeout, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
            started = time.monotonic()
            assert conn.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
