"""Scorer API: every input type gives the same score, results are well-formed, one input gives one result and
raises when bad while lists collect errors, embeddings, batching and threads do not change results. Models here have random weights (mechanics only)."""
from __future__ import annotations

import io
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_distill.errors import DecodeError, IAAError
from iaa_distill.scoring import Result, Scorer, ScoreResult
from tests.conftest import save_tiny_student

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def scorer(model_dir) -> Scorer:
    return Scorer.from_pretrained(model_dir, device="cpu", backend="torch")


def test_every_input_type_gives_the_same_score(scorer, photos):
    path = photos[0]
    image = Image.open(path).convert("RGB")
    array = np.array(image)
    inputs = [path, str(path), path.read_bytes(), image, array, torch.from_numpy(array).permute(2, 0, 1).contiguous(),
              scorer.preprocess(image, "image")]
    results = scorer.score(inputs)
    assert [r.error for r in results] == [""] * len(inputs)
    means = np.array([r.mean for r in results])
    np.testing.assert_allclose(means, means[0], atol=1e-6)
    assert results[0].path == str(path)
    assert results[2].path == "<input 2>"


def test_distribution_mean_and_std_are_consistent(scorer, photos):
    results = scorer.score(photos)
    levels = np.arange(1, 11, dtype=np.float64)  # a 10-level model on the 1..10 scale
    for r in results:
        p = np.asarray(r.distribution)
        assert p.shape == (10,) and (p >= 0).all() and abs(p.sum() - 1) < 1e-5
        assert r.mean == pytest.approx(float(p @ levels), abs=1e-4)
        assert r.std == pytest.approx(math.sqrt(float(p @ (levels - r.mean) ** 2)), abs=1e-4)
    assert len({round(r.mean, 6) for r in results}) > 1, "different photos should get different scores"


def test_scalar_model_has_no_distribution_and_nan_std(tmp_path, photos):
    scorer = Scorer.from_pretrained(save_tiny_student(tmp_path / "scalar", num_levels=None), device="cpu")
    result = scorer.score(photos[0])
    assert result.distribution is None and math.isnan(result.std) and math.isfinite(result.mean)
    assert result.to_dict()["std"] is None


def test_one_input_gives_one_result_and_raises_when_bad(scorer, photos, tmp_path):
    one = scorer.score(photos[0])
    assert isinstance(one, Result) and one.path == str(photos[0])
    assert one.mean == pytest.approx(scorer.score([photos[0]])[0].mean, abs=1e-6)
    with pytest.raises(DecodeError, match="missing.jpg"):
        scorer.score(tmp_path / "missing.jpg")
    assert not scorer.score(tmp_path / "missing.jpg", errors="collect").ok
    with pytest.raises(DecodeError, match="<input 1>: not a recognised image"):
        scorer.score([photos[0], b"not an image"], errors="raise")
    with pytest.raises(ValueError, match="errors"):
        scorer.score(photos[0], errors="ignore")


def test_embeddings_are_the_aesthetic_feature(scorer, photos, tmp_path):
    many = scorer.embed(photos[:3])
    width = scorer.backend.model.config.feature_dim
    assert many.shape == (3, width) and many.dtype == np.float32
    np.testing.assert_allclose(scorer.embed(photos[1]), many[1], atol=1e-5)
    with_score = scorer.score(photos[:3], embed=True)
    np.testing.assert_allclose(np.stack([r.embedding for r in with_score]), many, atol=1e-5)
    assert scorer.score(photos[0]).embedding is None  # only when asked
    by_path = scorer.score_paths(photos[:3], num_workers=0, embed=True)
    np.testing.assert_allclose(np.stack([r.embedding for r in by_path]), many, atol=1e-4)
    with pytest.raises(DecodeError):
        scorer.embed([photos[0], tmp_path / "missing.jpg"])


def test_bad_inputs_in_a_list_give_error_results_not_exceptions(scorer, photos, tmp_path):
    truncated = photos[1].read_bytes()[:200]
    results = scorer.score([photos[0], tmp_path / "missing.jpg", b"not an image", truncated, torch.zeros(4, 8, 8), photos[1]])
    assert [bool(r.error) for r in results] == [False, True, True, True, True, False]
    assert "missing.jpg" in results[1].error and "file not found" in results[1].error
    assert "shape" in results[4].error
    failed = results[2]
    assert math.isnan(failed.mean) and failed.distribution is None and not failed.ok
    assert failed.to_dict()["mean"] is None
    with pytest.raises(TypeError):
        scorer.score([42])


def test_batching_does_not_change_scores(scorer, photos):
    one = [r.mean for r in scorer.score(photos, batch_size=1)]
    many = [r.mean for r in scorer.score(photos, batch_size=32)]
    np.testing.assert_allclose(one, many, atol=1e-5)
    batch = torch.stack([scorer.preprocess(p, str(p)) for p in photos[:3]])
    np.testing.assert_allclose([r.mean for r in scorer.score(batch)], one[:3], atol=1e-5)


def test_score_paths_uses_workers_and_reports_bad_files(scorer, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    paths = [*photos[:4], bad, *photos[4:]]
    expected = scorer.score(paths)
    for workers in (0, 2):
        got = scorer.score_paths(paths, batch_size=3, num_workers=workers)
        assert [r.path for r in got] == [str(p) for p in paths]
        assert got[4].error.startswith(str(bad)) and not got[4].ok
        np.testing.assert_allclose(
            [r.mean for r in got if r.ok], [r.mean for r in expected if r.ok], atol=1e-5
        )


def test_concurrent_calls_match_sequential(scorer, photos):
    sequential = [r.mean for r in scorer.score(photos, batch_size=4)]
    jobs = [photos[i:] + photos[:i] for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda ps: scorer.score(ps, batch_size=3), jobs))
    for i, out in enumerate(outputs):
        np.testing.assert_allclose([r.mean for r in out], sequential[i:] + sequential[:i], atol=1e-5)


def test_loading_errors_are_clear(tmp_path):
    with pytest.raises(IAAError, match="not a model folder"):
        Scorer.from_pretrained(tmp_path)
    with pytest.raises(IAAError, match="unknown backend"):
        Scorer.from_pretrained(tmp_path, backend="tensorrt")
    with pytest.raises(IAAError, match="ONNX file not found"):
        Scorer.from_pretrained(tmp_path, backend="onnx")
    if not torch.cuda.is_available():
        with pytest.raises(IAAError, match="no CUDA GPU"):
            Scorer.from_pretrained(tmp_path, device="cuda")


def test_top_level_import_is_lazy():
    code = "import sys, iaa_distill; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "import iaa_distill should not import torch"
    import iaa_distill

    assert iaa_distill.Scorer is Scorer and iaa_distill.Result is Result is ScoreResult


def test_result_to_dict_round_trips_fields():
    result = Result("a.jpg", 5.5, 1.25, [0.5, 0.5], embedding=np.array([1.0, 2.0], dtype=np.float32))
    data = result.to_dict()
    assert data == {"path": "a.jpg", "mean": 5.5, "std": 1.25, "distribution": [0.5, 0.5], "embedding": [1.0, 2.0],
                    "error": ""}
    back = Result.from_dict(data)
    assert back.to_dict() == data and back.embedding.dtype == np.float32
    assert Result.failure("b.jpg", "b.jpg: bad").to_dict()["mean"] is None


def test_pil_image_decoded_from_bytes_keeps_its_name(scorer, photos):
    image = Image.open(io.BytesIO(photos[0].read_bytes()))
    image.filename = "holiday.jpg"
    assert scorer.score([image])[0].path == "holiday.jpg"


def test_camera_jpegs_score_from_their_preview_as_from_the_photo(scorer, sample_photos, tmp_path):
    """A camera JPEG's MPF preview stands in for the photo: same scores within the resampling's noise."""
    from iaa_distill.bench.photos import add_mpf_preview

    plain, camera = [], []
    for name, image in list(sorted(sample_photos.items()))[:4]:
        buffer = io.BytesIO()
        Image.fromarray(image).resize((1200, 900), Image.BICUBIC).save(buffer, "JPEG", quality=90)
        plain.append(tmp_path / f"{name}.jpg")
        plain[-1].write_bytes(buffer.getvalue())
        camera.append(tmp_path / f"{name}-camera.jpg")
        camera[-1].write_bytes(add_mpf_preview(buffer.getvalue(), long_side=400))  # 400x300, enough for 64 px
    full, preview = (np.array([r.mean for r in scorer.score_paths(p, batch_size=4)]) for p in (plain, camera))
    spread = full.max() - full.min()
    assert spread > 0 and np.abs(preview - full).max() < 0.1 * spread
