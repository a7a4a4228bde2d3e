"""`iaa export onnx --int8`: a statically quantised model that scores, refused (nothing written) past its bound."""
from __future__ import annotations

import onnx
import pytest

import iaa_distill.scoring.quantize as quantize
from iaa_distill.cli import main
from iaa_distill.scoring import Scorer
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")


def test_int8_model_scores_and_is_refused_past_its_bound(tmp_path, sample_photos, monkeypatch, capsys):
    write_jpegs(tmp_path / "photos", sample_photos, 8, size=160)
    model_dir = save_tiny_student(tmp_path / "student")
    out = tmp_path / "int8.onnx"
    args = ["export", "onnx", "--model", str(model_dir), "--int8", "--calibration", str(tmp_path / "photos")]
    assert main([*args, "--out", str(out), "--max-srcc-drop", "1"]) == 0
    assert "calibrated on 8 photos" in capsys.readouterr().out
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)
    results = Scorer.from_pretrained(model_dir, backend="onnx", onnx_path=out).score(sorted((tmp_path / "photos").iterdir()))
    assert all(r.ok for r in results)

    real = quantize.measure_drift
    monkeypatch.setattr(quantize, "measure_drift", lambda *a, **k: quantize.Drift(**{**real(*a, **k).__dict__, "srcc_drop": 0.2}))
    assert main([*args, "--out", str(tmp_path / "refused.onnx")]) == 1
    assert "int8 model refused" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "photos", "student"]  # nothing partial left
