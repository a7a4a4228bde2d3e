"""HTTP service: scores match the Python API; every kind of bad upload gets a clear 4xx JSON error;
inference concurrency is bounded. Random-weight model (mechanics only)."""
from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from iaa_distill.scoring import Scorer
from iaa_distill.scoring.server import create_app

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def client(model_dir) -> TestClient:
    with TestClient(create_app(model_dir, device="cpu")) as c:
        yield c


def upload(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def test_health_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["backbone"] == "test_efficientnet"
    assert health["scale"] == [1.0, 10.0] and health["num_levels"] == 10
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "fetch(\"score\"" in page.text
    assert "http://" not in page.text and "https://" not in page.text, "the page must not load anything external"


def test_score_one_and_many_match_the_api(client, model_dir, photos):
    expected = Scorer.from_pretrained(model_dir, device="cpu").score(photos)
    response = client.post("/score", files=upload(*[(p.name, p.read_bytes()) for p in photos]))
    assert response.status_code == 200
    body = response.json()["results"]
    assert [r["path"] for r in body] == [p.name for p in photos] and {r["error"] for r in body} == {""}
    for got, want in zip(body, expected):
        assert got["mean"] == pytest.approx(want.mean, abs=1e-5)
        assert got["std"] == pytest.approx(want.std, abs=1e-5)
        np.testing.assert_allclose(got["distribution"], want.distribution, atol=1e-6)
    single = client.post("/score", files=upload(("one.png", _png(photos[0]))))
    assert single.status_code == 200 and [r["path"] for r in single.json()["results"]] == ["one.png"]


def test_a_raw_image_body_gets_the_same_answer_as_multipart(client, photos):
    data = photos[0].read_bytes()
    multipart = client.post("/score", files=upload(("a.jpg", data))).json()
    raw = client.post("/score?name=a.jpg", content=data, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json() == multipart
    unnamed = client.post("/score", content=data, headers={"Content-Type": "application/octet-stream"}).json()
    assert unnamed["results"][0]["path"] == "upload 1"
    assert unnamed["results"][0]["mean"] == multipart["results"][0]["mean"]
    fake = client.post("/score?name=x.jpg", content=b"not an image", headers={"Content-Type": "image/jpeg"})
    assert fake.status_code == 415 and fake.json()["file"] == "x.jpg"
    wrong = client.post("/score", content=b"{}", headers={"Content-Type": "application/json"})
    assert wrong.status_code == 422 and "raw body" in wrong.json()["error"]


def _png(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def test_type_is_checked_by_content_not_name(client, photos):
    fake = client.post("/score", files=upload(("holiday.jpg", b"#!/bin/sh\necho not a photo\n")))
    assert fake.status_code == 415 and fake.json()["file"] == "holiday.jpg" and "holiday.jpg" in fake.json()["error"]
    renamed = client.post("/score", files=upload(("photo.txt", photos[0].read_bytes())))
    assert renamed.status_code == 200  # a real JPEG with a wrong extension is fine
    empty = client.post("/score", files=upload(("empty.jpg", b"")))
    assert empty.status_code == 415


def test_corrupt_image_is_422_alone_and_a_per_file_error_among_others(client, photos):
    data = photos[0].read_bytes()
    truncated = data[: len(data) // 2]  # the header survives, the pixels do not
    alone = client.post("/score", files=upload(("cut.jpg", truncated)))
    assert alone.status_code == 422 and alone.json()["file"] == "cut.jpg"
    response = client.post("/score", files=upload(("ok.jpg", photos[1].read_bytes()), ("cut.jpg", truncated),
                                                  ("text.jpg", b"hello")))
    assert response.status_code == 200  # the good result is not lost to the bad files
    ok, cut, text = response.json()["results"]
    assert ok["error"] == "" and ok["mean"] is not None
    assert cut["mean"] is None and "cut.jpg" in cut["error"] and "not a supported image" in text["error"]


def test_missing_field_is_a_clear_422(client):
    response = client.post("/score", data={"other": "x"})
    assert response.status_code == 422 and "files" in response.json()["error"]


def test_size_pixel_and_count_limits(model_dir, photos):
    data = photos[0].read_bytes()
    app = create_app(model_dir, device="cpu", max_upload_mb=len(data) / 2 / 1024 / 1024, max_pixels=96 * 72, max_files=2)
    with TestClient(app) as client:
        big = client.post("/score", files=upload(("big.jpg", data)))
        assert big.status_code == 413 and big.json()["file"] == "big.jpg" and "limit" in big.json()["error"]
        raw = client.post("/score?name=big.jpg", content=data, headers={"Content-Type": "image/jpeg"})
        assert raw.status_code == 413 and raw.json()["file"] == "big.jpg"
        many = client.post("/score", files=upload(*[(f"{i}.png", b"x") for i in range(3)]))
        assert many.status_code == 413 and "too many files" in many.json()["error"]
    small = Image.open(photos[0]).resize((60, 40))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG")
    wide = Image.new("RGB", (200, 100), "white")
    wide_buffer = io.BytesIO()
    wide.save(wide_buffer, format="PNG")
    with TestClient(create_app(model_dir, device="cpu", max_pixels=96 * 72)) as client:
        assert client.post("/score", files=upload(("small.jpg", buffer.getvalue()))).status_code == 200
        too_many_pixels = client.post("/score", files=upload(("wide.png", wide_buffer.getvalue())))
        assert too_many_pixels.status_code == 422 and "pixels" in too_many_pixels.json()["error"]


def test_inference_concurrency_is_bounded(model_dir, photos, monkeypatch):
    active, peak, lock = 0, 0, threading.Lock()
    original = Scorer.score

    def slow_score(self, *args, **kwargs):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.3)
        try:
            return original(self, *args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(Scorer, "score", slow_score)
    data = photos[0].read_bytes()
    with TestClient(create_app(model_dir, device="cpu", max_concurrency=2)) as client:
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: client.post("/score", files=upload(("a.jpg", data))).status_code, range(6)))
    assert codes == [200] * 6
    assert peak == 2


def test_a_raised_pixel_limit_is_not_undercut_by_pils_own(model_dir, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # PIL alone would refuse 20,000 px (over twice this)
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, format="PNG")
    with TestClient(create_app(model_dir, device="cpu", max_pixels=50_000)) as client:
        assert client.post("/score", files=upload(("wide.png", buffer.getvalue()))).status_code == 200


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path, capsys):
    import socket

    from iaa_distill.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(tmp_path / "no-model-needed"), "--port", str(port)]) == 1
    assert capsys.readouterr().err.strip() == (f"iaa: error: cannot listen on 127.0.0.1:{port}: Address already in use; "
                                              "choose another --port or --host")
