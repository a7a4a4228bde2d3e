"""ONNX export: dynamic batch, metadata enough to score, onnxruntime matches PyTorch on real photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from iaa_distill.cli import main
from iaa_distill.errors import IAAError
from iaa_distill.scoring import Scorer
from iaa_distill.scoring.onnx_export import export_onnx
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_photos) -> list[Path]:
    """Every real sample photo, at a realistic aspect ratio, larger than the model input."""
    return write_jpegs(tmp_path_factory.mktemp("photos"), sample_photos, len(sample_photos) * 2, size=320)


def _max_mean_diff(model_dir: Path, onnx_path: Path, photos: list[Path]) -> float:
    reference = Scorer.from_pretrained(model_dir, device="cpu", backend="torch").score(photos, batch_size=4)
    exported = Scorer.from_pretrained(model_dir, device="cpu", backend="onnx", onnx_path=onnx_path).score(photos, batch_size=5)
    assert all(r.ok for r in reference + exported)
    for a, b in zip(reference, exported):
        np.testing.assert_allclose(a.distribution, b.distribution, atol=1e-4)
    return max(abs(a.mean - b.mean) for a, b in zip(reference, exported))


def test_export_metadata_and_dynamic_batch(tmp_path):
    model_dir = save_tiny_student(tmp_path / "student")
    path = export_onnx(model_dir, tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["input_size"] == "64" and props["num_levels"] == "10" and json.loads(props["scale"]) == [1.0, 10.0]
    assert props["interpolation"] == json.loads((model_dir / "config.json").read_text())["interpolation"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["mean", "distribution", "embedding"]
    for batch in (1, 5):
        mean, dist, embedding = session.run(None, {"images": np.random.rand(batch, 3, 64, 64).astype(np.float32)})
        assert mean.shape == (batch,) and dist.shape == (batch, 10) and embedding.shape[0] == batch


def test_onnx_matches_pytorch_on_real_photos(tmp_path, photos):
    model_dir = save_tiny_student(tmp_path / "student", seed=3)
    onnx_path = export_onnx(model_dir, tmp_path / "model.onnx")
    assert _max_mean_diff(model_dir, onnx_path, photos) < 1e-3


@pytest.mark.parametrize("layout", [{"pooling": "mlsp", "distill_dim": 6}, {"pooling": "last"},
                                    {"pooling": "last", "feature_layer": "relu"}])
def test_every_student_layout_exports_and_scores_alike(tmp_path, photos, layout):
    """MLSP (the default, with a distillation projector the graph leaves out), last map, and the layout of
    student folders saved by earlier versions; the fine-tuning recipes change weights, not the graph."""
    model_dir = save_tiny_student(tmp_path / "student", seed=4, **layout)
    onnx_path = export_onnx(model_dir, tmp_path / "model.onnx")
    assert _max_mean_diff(model_dir, onnx_path, photos[:4]) < 1e-3


def test_default_architecture_onnx_matches_pytorch(tmp_path, photos):
    """The real student architecture (tf_efficientnet_lite0 at 224 px), random weights."""
    model_dir = save_tiny_student(tmp_path / "lite0", backbone="tf_efficientnet_lite0", input_size=224)
    onnx_path = export_onnx(model_dir, tmp_path / "lite0.onnx")
    assert _max_mean_diff(model_dir, onnx_path, photos[:6]) < 1e-3


def test_onnx_file_alone_scores_and_scalar_models_export(tmp_path, photos):
    model_dir = save_tiny_student(tmp_path / "scalar", num_levels=None)
    onnx_path = export_onnx(model_dir, tmp_path / "scalar.onnx")
    alone = Scorer.from_pretrained(None, device="cpu", backend="onnx", onnx_path=onnx_path)
    assert alone.config.num_levels is None and alone.config.input_size == 64
    got = alone.score(photos[:3])
    reference = Scorer.from_pretrained(model_dir, device="cpu")
    expected = reference.score(photos[:3])
    assert all(r.distribution is None for r in got)
    np.testing.assert_allclose([r.mean for r in got], [r.mean for r in expected], atol=1e-4)
    np.testing.assert_allclose(alone.embed(photos[:3]), reference.embed(photos[:3]), atol=1e-4)


def test_mismatched_or_foreign_onnx_is_refused(tmp_path):
    ten = save_tiny_student(tmp_path / "ten")
    scalar_onnx = export_onnx(save_tiny_student(tmp_path / "scalar", num_levels=None), tmp_path / "scalar.onnx")
    with pytest.raises(IAAError, match="different model"):
        Scorer.from_pretrained(ten, backend="onnx", onnx_path=scalar_onnx)
    ten_onnx = export_onnx(ten, tmp_path / "ten.onnx")
    bilinear = save_tiny_student(tmp_path / "bilinear", interpolation="bilinear")  # only the preprocessing differs
    with pytest.raises(IAAError, match="different model.*interpolation 'bicubic' -> 'bilinear'"):
        Scorer.from_pretrained(bilinear, backend="onnx", onnx_path=ten_onnx)
    assert Scorer.from_pretrained(ten, backend="onnx", onnx_path=ten_onnx).config.interpolation == "bicubic"
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(2, 1).eval(), (torch.rand(1, 2),), str(foreign), dynamo=False)
    with pytest.raises(IAAError, match="no iaa-distill metadata"):
        Scorer.from_pretrained(None, backend="onnx", onnx_path=foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx")
    with pytest.raises(IAAError, match="cannot load ONNX model"):
        Scorer.from_pretrained(None, backend="onnx", onnx_path=garbage)


def test_cli_export_then_score_with_onnx_backend(tmp_path, photos, capsys):
    model_dir = save_tiny_student(tmp_path / "student")
    assert main(["export", "onnx", "--model", str(model_dir)]) == 0
    assert (model_dir / "model.onnx").is_file() and "max |mean score difference|" in capsys.readouterr().out
    folder = photos[0].parent
    outs = {}
    for backend in ("torch", "onnx"):
        outs[backend] = tmp_path / f"{backend}.jsonl"
        args = ["score", str(folder), "--model", str(model_dir), "--backend", backend, "--out", str(outs[backend]), "--workers", "0", "--threads", "1"]
        assert main(args) == 0
    rows = {b: [json.loads(line) for line in p.read_text().splitlines()] for b, p in outs.items()}
    assert [r["path"] for r in rows["torch"]] == [r["path"] for r in rows["onnx"]]
    np.testing.assert_allclose([r["mean"] for r in rows["torch"]], [r["mean"] for r in rows["onnx"]], atol=1e-3)


def test_tf_same_padding_and_mlsp_taps_export_as_onnx_runtime_runs_them_fastest(tmp_path, photos):
    """The TensorFlow-"same" pads fold into their convolutions and the MLSP taps are GlobalAveragePool, so
    ONNX Runtime keeps its blocked layout (before: a Pad copying the map before every strided convolution, and a
    conversion back to NCHW at every tap); the scores stay PyTorch's."""
    model_dir = save_tiny_student(tmp_path / "lite0", backbone="tf_efficientnet_lite0", input_size=64)
    onnx_path = export_onnx(model_dir, tmp_path / "lite0.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "GlobalAveragePool" in ops and not ops & {"Pad", "ReduceMean"}
    assert _max_mean_diff(model_dir, onnx_path, photos[:4]) < 1e-3
