"""One photo, one score, wherever it is read: `iaa score`'s stdout JSON and its CSV, the Python API, the ONNX
reference preprocessing of the README (plain onnxruntime + PIL, run as printed) and the HTTP answer agree
within 1e-3. Photos are larger than twice the input size, so the JPEG reduced-size decode matters."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from iaa_distill.cli import main
from iaa_distill.scoring import Scorer
from iaa_distill.scoring.onnx_export import export_onnx
from iaa_distill.scoring.server import create_app
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def reference_snippet() -> str:
    """The README's ONNX reference code block (the one after its `onnx-reference` marker)."""
    text = README.read_text()
    return re.search(r"<!-- onnx-reference[^>]*-->\n```python\n(.*?)```", text, re.S).group(1)


def sensitive_student(directory: Path) -> Path:
    """A tiny random student whose prediction layer is scaled up, so that its scores spread over the scale and
    move with small pixel changes (an untouched random head scores every photo within 1e-3 of the others)."""
    from iaa_distill.student import Student

    model = Student.from_pretrained(save_tiny_student(directory))
    if model.config.feature_layer == "linear":  # identity standardisation: raw pooled features carry the spread
        model.pooled_mean.zero_()
        model.pooled_std.fill_(1.0)
        # and no signed square root: a tiny random backbone pools values of about 1e-4..0.1 (a trained one
        # 0.003..6), where it is steep enough to turn the decoders' one-level pixel differences into 0.01 here
        model.config.pooled_power = 1.0
    model.head[-1].weight.data *= 200
    return model.save_pretrained(directory)


def run_snippet(code: str, folder: Path, onnx: Path, paths: list[str], monkeypatch) -> list[float]:
    """Run the snippet as printed (model.onnx and photo.jpg in the working folder), then on every photo."""
    shutil.copyfile(onnx, folder / "model.onnx")
    shutil.copyfile(paths[0], folder / "photo.jpg")
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(code, namespace)
    session, preprocess = namespace["session"], namespace["preprocess"]
    means = [float(session.run(["mean"], {"images": preprocess(p)[None]})[0][0]) for p in paths]
    assert float(namespace["mean"]) == pytest.approx(means[0], abs=1e-6)
    return means


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("agreement")
    model_dir = sensitive_student(root / "student")
    photos = write_jpegs(root / "photos", sample_photos, 6, size=320)  # 320 >= 2 x 64: reduced-size decode
    return model_dir, export_onnx(model_dir, root / "exported.onnx"), photos


def test_cli_csv_api_onnx_snippet_and_http_agree(setup, tmp_path, capsys, monkeypatch):
    model_dir, onnx_path, photos = setup
    paths = [str(p) for p in photos]
    api = [r.mean for r in Scorer.from_pretrained(model_dir, device="cpu").score(paths)]

    common = ["--model", str(model_dir), "--workers", "0", "--no-progress"]
    assert main(["score", *paths, *common, "--out", "-", "--format", "json"]) == 0
    stdout = {r["path"]: r["mean"] for r in json.loads(capsys.readouterr().out)}
    assert main(["score", *paths, *common, "--out", str(tmp_path / "s.csv")]) == 0
    with (tmp_path / "s.csv").open(newline="") as f:
        from_csv = {r["path"]: float(r["mean"]) for r in csv.DictReader(f)}

    onnx = run_snippet(reference_snippet(), tmp_path, onnx_path, paths, monkeypatch)

    with TestClient(create_app(model_dir, device="cpu")) as client:
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        http = [r["mean"] for r in client.post("/score", files=files).json()["results"]]

    for name, got in (("stdout JSON", [stdout[p] for p in paths]), ("CSV", [from_csv[p] for p in paths]),
                      ("ONNX reference snippet", onnx), ("HTTP", http)):
        np.testing.assert_allclose(got, api, atol=1e-3, err_msg=name)
    assert np.ptp(api) > 0.02, "different photos should score differently, or agreement says nothing"


def test_plain_pil_without_the_reduced_size_decode_disagrees(setup, tmp_path, monkeypatch):
    """The test above can fail: the snippet minus its draft() line (a plain PIL resize) misses by more than 1e-3."""
    model_dir, onnx_path, photos = setup
    paths = [str(p) for p in photos]
    plain = "\n".join(line for line in reference_snippet().splitlines() if ".draft(" not in line)
    api = [r.mean for r in Scorer.from_pretrained(model_dir, device="cpu").score(paths)]
    assert max(abs(a - b) for a, b in zip(run_snippet(plain, tmp_path, onnx_path, paths, monkeypatch), api)) > 1e-3
