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


def test_the_fast_scheme_first_then_the_accurate_one_when_the_fast_one_drifts(tmp_path, sample_photos, monkeypatch):
    write_jpegs(tmp_path / "photos", sample_photos, 6, size=160)
    model_dir = save_tiny_student(tmp_path / "student")
    photos = [str(p) for p in sorted((tmp_path / "photos").iterdir())]
    fast, accurate = quantize.SCHEMES
    drift = quantize.quantize_onnx(model_dir, tmp_path / "fast.onnx", photos, max_srcc_drop=1.0)
    assert drift.scheme == fast and fast in drift.summary()
    ops = {node.op_type for node in onnx.load(str(tmp_path / "fast.onnx")).graph.node}
    assert "QuantizeLinear" in ops

    real, calls = quantize.measure_drift, []

    def fast_one_drifts(*args, **kwargs):
        calls.append(1)
        measured = real(*args, **kwargs)
        return quantize.Drift(**{**measured.__dict__, "srcc_drop": 0.2}) if len(calls) == 1 else measured

    monkeypatch.setattr(quantize, "measure_drift", fast_one_drifts)
    drift = quantize.quantize_onnx(model_dir, tmp_path / "accurate.onnx", photos, max_srcc_drop=0.1)
    assert drift.scheme == accurate and len(calls) == 2 and (tmp_path / "accurate.onnx").is_file()
