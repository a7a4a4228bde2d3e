"""Issue 21, the service: decoded pixels bounded across concurrent requests, slow clients cut off, per-client slots.

Small numbers stand for the real ones (a budget of a few thousand pixels instead of 64 million);
`benchmarks/service_memory.py` measures the real goal (RSS under 2 GB with 8 clients x 32 PNGs of 7700 x 7700).
"""
from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from iaa_distill.scoring import server
from iaa_distill.scoring.scorer import Scorer

pytestmark = pytest.mark.usefixtures("single_thread")
BOUNDARY = "x-boundary"


def _png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 100, 50)).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(files: list[tuple[str, bytes]]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{n}"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for n, data in files]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def test_decoded_pixels_stay_within_the_budget_across_concurrent_requests(model_dir, monkeypatch):
    held, peak, lock = 0, 0, threading.Lock()  # pixels decoded and not yet scored, over all requests
    real_check, real_score = server.check_image, Scorer.score

    def counting_check(name, data, max_pixels, min_side=None):
        nonlocal held, peak
        image = real_check(name, data, max_pixels, min_side)
        with lock:
            held += image.width * image.height
            peak = max(peak, held)
        time.sleep(0.02)  # let the other requests interleave
        return image

    def counting_score(self, images, *args, **kwargs):
        nonlocal held
        results = real_score(self, images, *args, **kwargs)
        with lock:
            held -= sum(i.width * i.height for i in images)
        return results

    monkeypatch.setattr(server, "check_image", counting_check)
    monkeypatch.setattr(Scorer, "score", counting_score)
    files = [(f"p{i}.png", _png(100, 100, i)) for i in range(4)]  # 10,000 pixels each
    app = server.create_app(model_dir, device="cpu", max_concurrency=4, pixel_budget=25_000)
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/score", files=[("files", f) for f in files]), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert all(r["mean"] is not None for a in answers for r in a.json()["results"])
    assert 0 < peak <= 25_000, f"{peak} pixels decoded at once for a budget of 25,000"
    with TestClient(server.create_app(model_dir, device="cpu")) as client:  # the budget changes no score
        alone = client.post("/score", files=[("files", f) for f in files]).json()
    means = [r["mean"] for r in answers[0].json()["results"]]  # batches of 2 instead of 4: float rounding only
    assert means == pytest.approx([r["mean"] for r in alone["results"]], abs=1e-5)


def test_an_image_larger_than_the_budget_is_decoded_alone_not_refused(model_dir):
    app = server.create_app(model_dir, device="cpu", pixel_budget=1_000)
    with TestClient(app) as client:
        answer = client.post("/score", files=[("files", ("big.png", _png(100, 80, 3)))])
    assert answer.status_code == 200 and answer.json()["results"][0]["mean"] is not None


def _scope(client: str = "10.0.0.1") -> dict:
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/score", "raw_path": b"/score", "query_string": b"", "root_path": "", "headers": headers,
            "client": (client, 1), "server": ("127.0.0.1", 80)}


async def _call(app, receive, client: str = "10.0.0.1") -> tuple[int, dict]:
    sent = []

    async def send(message):
        sent.append(message)

    await app(_scope(client), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def _trickle(body: bytes, every: float):
    """A client sending 1 KB every `every` seconds."""
    chunks = [body[i:i + 1024] for i in range(0, len(body), 1024)]

    async def receive():
        await asyncio.sleep(every)
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return receive


def _at_once(body: bytes):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def test_slow_clients_are_cut_off_and_a_normal_upload_is_answered_meanwhile(model_dir):
    app = server.create_app(model_dir, device="cpu", max_uploads=4, min_upload_kbps=16, read_timeout=60)
    body = _multipart([("a.png", _png(64, 48, 1) + b"\0" * 20_000)])

    async def scenario():
        slow = [asyncio.create_task(_call(app, _trickle(body, 0.2), f"10.0.0.{i}")) for i in range(3)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        normal = await _call(app, _at_once(body), "10.0.1.1")
        waited = time.monotonic() - started
        return normal, waited, await asyncio.gather(*slow)

    started = time.monotonic()
    (status, answer), waited, slow = asyncio.run(scenario())
    assert status == 200 and answer["results"][0]["mean"] is not None and waited < 2
    assert all(s == 408 and "slower than 16 KB/s" in b["error"] for s, b in slow)
    assert time.monotonic() - started < 10, "slow clients held their slots until the 60 s deadline"


def test_uploads_per_client_are_limited(model_dir):
    app = server.create_app(model_dir, device="cpu", max_uploads=8, per_client=1, min_upload_kbps=0)
    body = _multipart([("a.png", _png(32, 32, 1))])

    async def scenario():
        release = asyncio.Event()

        async def held():
            await release.wait()
            return {"type": "http.request", "body": body, "more_body": False}

        first = asyncio.create_task(_call(app, held))
        await asyncio.sleep(0.05)
        same, other = await _call(app, _at_once(body)), None
        other_task = asyncio.create_task(_call(app, _at_once(body), "10.9.9.9"))
        await asyncio.sleep(0.5)
        release.set()
        other = await other_task
        return same, other, await first

    same, other, first = asyncio.run(scenario())
    assert same[0] == 503 and "from 10.0.0.1" in same[1]["error"]
    assert other[0] == 200 and first[0] == 200
