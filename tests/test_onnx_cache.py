"""`--backend auto`: ONNX Runtime on the CPU from an export made once, cached by the weights' hash, never stale."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import iaa_distill.scoring.onnx_cache as onnx_cache
import iaa_distill.scoring.onnx_export as onnx_export
from iaa_distill.scoring import Scorer
from tests.conftest import save_tiny_student, write_jpegs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def photos(tmp_path, sample_photos):
    return write_jpegs(tmp_path / "photos", sample_photos, 4, size=160)


def _means(scorer: Scorer, photos) -> np.ndarray:
    return np.array([r.mean for r in scorer.score(photos)])


def test_auto_runs_a_cached_export_that_scores_as_pytorch(tmp_path, photos, monkeypatch):
    model_dir = save_tiny_student(tmp_path / "student", seed=1)
    auto = Scorer.from_pretrained(model_dir, device="cpu")
    assert auto.backend.name == "onnx" and auto.backend.path.parent == model_dir / onnx_cache.CACHE_FOLDER
    reference = Scorer.from_pretrained(model_dir, device="cpu", backend="torch")
    np.testing.assert_allclose(_means(auto, photos), _means(reference, photos), atol=1e-4)
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: pytest.fail("exported twice"))
    assert Scorer.from_pretrained(model_dir, device="cpu").backend.path == auto.backend.path

    save_tiny_student(model_dir, seed=2)  # retrained in place: the old export must not be used
    monkeypatch.undo()
    retrained = Scorer.from_pretrained(model_dir, device="cpu")
    assert retrained.backend.path != auto.backend.path
    np.testing.assert_allclose(_means(retrained, photos),
                               _means(Scorer.from_pretrained(model_dir, device="cpu", backend="torch"), photos), atol=1e-4)


def test_unwritable_model_folder_caches_in_the_user_cache(tmp_path, monkeypatch):
    model_dir = save_tiny_student(tmp_path / "snapshot")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = onnx_cache._writable
    monkeypatch.setattr(onnx_cache, "_writable", lambda folder: folder.parent != model_dir and real(folder))
    scorer = Scorer.from_pretrained(model_dir, device="cpu")
    assert scorer.backend.name == "onnx" and scorer.backend.path.parent == tmp_path / "cache" / "iaa-distill" / "onnx"
    assert not (model_dir / onnx_cache.CACHE_FOLDER).exists() or not any((model_dir / onnx_cache.CACHE_FOLDER).iterdir())


def test_a_model_that_does_not_export_scores_with_pytorch_and_says_so(tmp_path, photos, monkeypatch, caplog):
    model_dir = save_tiny_student(tmp_path / "student")

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate")

    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="iaa_distill"):
        scorer = Scorer.from_pretrained(model_dir, device="cpu")
    assert scorer.backend.name == "torch" and all(r.ok for r in scorer.score(photos))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "aten::frobnicate" in warnings[0].getMessage()
    assert not list((model_dir / onnx_cache.CACHE_FOLDER).glob("*.onnx"))


def test_threads_fit_beside_the_decoding_workers(tmp_path, monkeypatch):
    from iaa_distill.scoring.scorer import threads_beside

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert (threads_beside(2), threads_beside(1), threads_beside(0)) == (1, 1, 2)
    scorer = Scorer.from_pretrained(save_tiny_student(tmp_path / "student"), device="cpu", threads=1)
    options = scorer.backend.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # shared cores: sleep, not spin


def test_default_threads_sleep_rather_than_spin_beside_the_decoding_workers(tmp_path):
    """`iaa score`'s default engine threads (one per core) must not spin: the decoding workers need those cores."""
    scorer = Scorer.from_pretrained(save_tiny_student(tmp_path / "student"), device="cpu")
    options = scorer.backend.session.get_session_options()
    assert scorer.backend.name == "onnx" and options.intra_op_num_threads == 0  # the engine's own count
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
