"""Accuracy mode: a teacher folder scores images like its head on the feature cache's rows; ONNX equals PyTorch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iaa_distill.cli import main
from iaa_distill.data.folder import read_folder
from iaa_distill.errors import IAAError
from iaa_distill.features import ExtractionSettings, FeatureCache, extract_features
from iaa_distill.scoring import Scorer
from iaa_distill.teacher_head import TeacherHead, TeacherHeadConfig, predict_features, signed_power
from iaa_distill.teacher_model import TeacherScorerModel
from tests.conftest import write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")
TEACHERS = ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]  # bundled weights, two input sizes (224, 240)


def _cache(images: Path, out: Path, teachers: list[str], hflip: bool) -> FeatureCache:
    return extract_features(read_folder(images), out, ExtractionSettings(tuple(teachers), batch_size=4, num_workers=0,
                                                                         device="cpu", decoder="pil", hflip=hflip,
                                                                         progress=False))


def _teacher_folder(cache: FeatureCache, out: Path, num_levels: int | None = 10, seed: int = 0) -> Path:
    """A teacher head over `cache` with random weights and non-trivial BatchNorm statistics, saved as training does,
    with the linear head's signed square root of the features (so that scoring and ONNX apply it too)."""
    torch.manual_seed(seed)
    features = signed_power(torch.from_numpy(np.asarray(cache.features, dtype=np.float32)), 0.5)
    config = TeacherHeadConfig(input_dim=cache.dim, num_levels=num_levels, hidden=(32, 8),
                               teachers=cache.manifest["teachers"], hflip=bool(cache.manifest["hflip"]),
                               cache_fingerprint=cache.manifest.fingerprint(), synthetic_labels=True, input_power=0.5)
    head = TeacherHead(config)
    with torch.no_grad():
        head.body[0].running_mean.copy_(features.mean(0))
        head.body[0].running_var.copy_(features.var(0) + 1e-3)
    head.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("teacher_scorer")
    paths = write_jpegs(root / "images", sample_photos, 5, size=320)
    cache = _cache(root / "images", root / "cache", TEACHERS, hflip=False)
    return paths, cache, _teacher_folder(cache, root / "teacher")


def _cache_scores(folder: Path, cache: FeatureCache, paths: list[Path]) -> np.ndarray:
    rows = [cache.ids.index(p.name) if p.name in cache.ids else cache.ids.index(p.stem) for p in paths]
    mean, _ = predict_features(TeacherHead.from_pretrained(folder), np.asarray(cache.features)[rows])
    return mean


def test_scores_from_images_equal_the_head_on_cached_features(setup):
    paths, cache, folder = setup
    scorer = Scorer.from_pretrained(folder, device="cpu", backend="torch")
    assert scorer.config.backbone == "+".join(TEACHERS) and scorer.output_shape == (3 * (224**2 + 240**2),)
    results = scorer.score_paths(paths, batch_size=2, num_workers=0)
    assert all(r.ok for r in results)
    scores = np.array([r.mean for r in results])
    expected = _cache_scores(folder, cache, paths)
    assert np.ptp(expected) > 1e-3  # a head that gives every image the same score would prove nothing
    np.testing.assert_allclose(scores, expected, atol=2e-3)
    in_memory = scorer.score([str(p) for p in paths], batch_size=3)  # the in-process path decodes the same way
    np.testing.assert_allclose([r.mean for r in in_memory], scores, atol=1e-5)


def test_threads_sharing_one_scorer_get_the_sequential_scores(setup):
    from concurrent.futures import ThreadPoolExecutor

    paths, _, folder = setup
    scorer = Scorer.from_pretrained(folder, device="cpu", backend="torch")
    sequential = [scorer.score(str(p)).mean for p in paths]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda p: scorer.score(str(p)).mean, paths))
    np.testing.assert_allclose(threaded, sequential, atol=1e-5)


def test_hflip_cache_is_scored_with_mirror_averaging(tmp_path, setup):
    paths, _, _ = setup
    cache = _cache(paths[0].parent, tmp_path / "cache", TEACHERS[:1], hflip=True)
    folder = _teacher_folder(cache, tmp_path / "teacher", num_levels=None, seed=1)
    model = TeacherScorerModel.from_pretrained(folder)
    assert all(t.hflip for t in model.teachers.teachers)
    results = Scorer.from_pretrained(folder, device="cpu", backend="torch").score_paths(paths, batch_size=4, num_workers=0)
    np.testing.assert_allclose([r.mean for r in results], _cache_scores(folder, cache, paths), atol=2e-3)


def test_teachers_other_than_the_recorded_ones_are_refused(tmp_path, setup):
    _, _, folder = setup
    config = json.loads((folder / "config.json").read_text())
    for name, edit, message in [
        ("weights", lambda c: c["teachers"][0]["weights"].update(sha256="0" * 64), "weights differ"),
        ("size", lambda c: c["teachers"][1].update(input_size=300), "input_size 240 vs 300"),
        ("none", lambda c: c.update(teachers=[]), "does not record its teachers"),
        ("file", lambda c: c["teachers"][0]["weights"].update(kind="file"), "local weights file"),
    ]:
        edited = json.loads(json.dumps(config))
        edit(edited)
        target = tmp_path / name
        target.mkdir()
        (target / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        (target / "config.json").write_text(json.dumps(edited))
        with pytest.raises(IAAError, match=message):
            Scorer.from_pretrained(target, device="cpu")


@pytest.mark.slow
def test_onnx_export_equals_torch_and_scores_alone(tmp_path, setup, capsys):
    paths, _, folder = setup
    out = tmp_path / "teacher.onnx"
    assert main(["export", "onnx", "--model", str(folder), "--out", str(out)]) == 0
    assert "max |mean score difference|" in capsys.readouterr().out
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert [t["input_size"] for t in json.loads(props["teacher_inputs"])] == [224, 240]
    reference = Scorer.from_pretrained(folder, device="cpu", backend="torch").score_paths(paths, batch_size=2, num_workers=0)
    alone = Scorer.from_pretrained(None, device="cpu", backend="onnx", onnx_path=out)  # the file and nothing else
    exported = alone.score_paths(paths, batch_size=3, num_workers=0)
    np.testing.assert_allclose([r.mean for r in exported], [r.mean for r in reference], atol=1e-4)
    np.testing.assert_allclose([r.distribution for r in exported], [r.distribution for r in reference], atol=1e-5)


def test_cli_score_with_a_teacher_folder(tmp_path, setup, capsys):
    paths, _, folder = setup
    out = tmp_path / "scores.csv"
    assert main(["score", str(paths[0].parent), "--model", str(folder), "--out", str(out), "--workers", "0",
                 "--device", "cpu"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + len(paths) and all(line.split(",")[1] for line in lines[1:])
