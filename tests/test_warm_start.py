"""The multi-level student, its closed-form warm start and the fine-tuning phases (tiny models, no training)."""
from __future__ import annotations

import copy
import json
from itertools import pairwise

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeCV

from iaa_distill.data.records import ImageRecord
from iaa_distill.student import Student, StudentConfig
from iaa_distill.teachers.mlsp import Teacher
from iaa_distill.teachers.weights import WeightsSource
from iaa_distill.training.head_candidates import RIDGE_ALPHAS, ridge_targets
from iaa_distill.training.student_recipe import phase, resolve_schedule, set_phase, trainable_backbone
from iaa_distill.training.warm_start import WarmStartData, fit_warm_start


def _student(num_levels: int | None = 5, **overrides) -> Student:
    torch.manual_seed(0)
    config = StudentConfig.for_backbone("test_efficientnet", input_size=32, num_levels=num_levels,
                                        scale=(1.0, 5.0), **{"feature_dim": 64, **overrides})
    return Student(config).eval()


def test_student_pools_every_block_like_the_teacher_and_an_ema_copy_pools_its_own():
    import timm

    student = _student()
    backbone = timm.create_model("test_efficientnet", pretrained=False)
    teacher = Teacher("test_efficientnet", backbone, WeightsSource("random", "none", ""))
    assert student.project[0].in_features == teacher.dim  # the same MLSP levels, one forward pass
    student.backbone.load_state_dict(teacher.model.state_dict(), strict=False)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(student.raw_pooled(images), teacher(images), rtol=1e-5, atol=1e-5)
        ema = copy.deepcopy(student)
        ema.project[0].weight.add_(1.0)  # a different copy must give a different output from its own blocks
        assert not torch.allclose(ema(images)[0], student(images)[0])
        assert torch.allclose(copy.deepcopy(student)(images)[0], student(images)[0])


def _normalised(pooled: np.ndarray, widths: list[int]) -> np.ndarray:
    """The warm start's normalisation written out: signed square root, standardised, each block scaled to the same
    total variance (checked)."""
    x = np.sign(pooled) * np.sqrt(np.abs(pooled))
    z = (x - x.mean(0)) / x.std(0)
    edges = np.cumsum([0, *widths])
    for start, end in pairwise(edges):
        z[:, start:end] *= np.sqrt(edges[-1] / (len(widths) * (end - start)))
    totals = [z[:, start:end].var(0).sum() for start, end in pairwise(edges)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-6)
    return z


@pytest.mark.parametrize("num_levels", [5, None])
def test_warm_start_computes_the_label_ridge_on_normalised_pooled_features(num_levels):
    """The warm-started layers, from the raw pooled vector on, compute sklearn's ridge on the normalised vectors."""
    student = _student(num_levels)
    assert student.config.pooled_power == 0.5 and len(student.block_widths) > 2
    rng = np.random.default_rng(0)
    n, dim = 40, student.project[0].in_features
    pooled = rng.standard_normal((n, dim)) * rng.uniform(0.1, 5, dim) + rng.uniform(-3, 3, dim)
    labels = rng.dirichlet(np.ones(5), n).astype(np.float32) if num_levels else rng.uniform(0, 1, n)
    report = fit_warm_start(student, pooled, WarmStartData(None, np.arange(n), labels))
    z = _normalised(pooled, student.block_widths)
    expected = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, ridge_targets(labels, student.config.space)).predict(z)
    with torch.no_grad():
        normalised = student.normalise(torch.from_numpy(pooled).float())
        raw = student.head(student.project(normalised)).numpy()
    np.testing.assert_allclose(normalised.numpy(), z, atol=2e-4)
    # fewer images than feature_dim: the principal components span them all, so the ridge loses nothing
    assert report["components"] == n - 1
    centred = raw - raw.mean(1, keepdims=True) if num_levels else raw
    np.testing.assert_allclose(centred, expected.reshape(centred.shape), atol=2e-3)
    feature = student.project(normalised).detach().numpy()[:, :n - 1]
    np.testing.assert_allclose(feature.std(0), 1.0, atol=1e-3)  # a whitened feature of fixed width


def test_distilled_warm_start_fits_teacher_on_unlabelled_rows_and_the_projector():
    student = _student(distill_dim=3)
    rng = np.random.default_rng(1)
    n, n_labelled, dim = 60, 20, student.project[0].in_features
    pooled = rng.standard_normal((n, dim))
    teacher_pred = rng.dirichlet(np.ones(5), n).astype(np.float32)
    teacher_feature = pooled[:, :3] * 2 + 0.01 * rng.standard_normal((n, 3))
    labels = teacher_pred[:n_labelled]
    data = WarmStartData(None, np.arange(n), labels, teacher_feature, teacher_pred)
    report = fit_warm_start(student, pooled, data, beta=1.0)
    assert report["rows"] == n and "feature_penalty" in report
    with torch.no_grad():
        predicted = student.distilled_feature(student.project(student.normalise(torch.from_numpy(pooled).float())))
    predicted = predicted.numpy()
    assert np.corrcoef(predicted[:, 0], teacher_feature[:, 0])[0, 1] > 0.9


def test_phases_choose_what_trains():
    assert resolve_schedule("auto", 500) == "progressive" and resolve_schedule("auto", 50_000) == "full"
    assert [phase(e, "progressive", 1, 1) for e in range(5)] == ["probe", "probe", "partial", "full", "full"]
    assert [phase(e, "probe", 1, 1) for e in range(3)] == ["probe"] * 3
    assert [phase(e, "partial", 2, 1) for e in range(5)] == ["probe", "probe", "probe", "partial", "partial"]
    student = _student().train()
    everything = sum(p.numel() for p in student.backbone.parameters())
    partial = sum(p.numel() for m in trainable_backbone(student, "partial") for p in m.parameters(recurse=False))
    assert 0 < partial < everything
    set_phase(student, "probe")
    assert not any(p.requires_grad for p in student.backbone.parameters()) and not student.backbone.training
    set_phase(student, "partial")
    trained = [m for m in student.backbone.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    assert trained and not student.backbone.conv_stem.weight.requires_grad
    set_phase(student, "full")
    assert all(p.requires_grad for p in student.backbone.parameters()) and student.backbone.training


def test_an_old_student_folder_loads_with_its_own_layout(tmp_path):
    old = {"backbone": "test_efficientnet", "num_levels": 5, "scale": [1, 5], "feature_dim": 8, "input_size": 32}
    model = Student(StudentConfig.from_dict(old)).eval()
    assert isinstance(model.project[1], torch.nn.ReLU) and model.distill is None and not model.blocks
    model.save_pretrained(tmp_path / "old")
    loaded = Student.from_pretrained(tmp_path / "old")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.predict(images)[0], model.predict(images)[0])


def test_sharpen_matches_the_spread_of_the_votes_without_changing_the_ranking():
    from iaa_distill.training.warm_start import sharpen

    student = _student()
    space = student.config.space
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.standard_normal((50, 5))).float()
    votes = torch.softmax(logits * 2.5, -1).numpy()  # the truth is sharper than the fitted logits
    before = space.decode(logits)[0]
    raw, factor = sharpen(student, logits, votes)
    assert factor == pytest.approx(2.5, abs=0.06)
    assert torch.allclose(student.head[1].weight, _student().head[1].weight * factor)
    mean, dist = space.decode(raw)
    assert np.median(space.std(dist.numpy(), mean.numpy())) == pytest.approx(
        np.median(space.std(votes, mean.numpy())), rel=0.05)
    from scipy.stats import spearmanr

    assert spearmanr(mean.numpy(), before.numpy())[0] > 0.9  # a sharper softmax moves the means, hardly their order


def test_pooled_features_are_a_resumable_row_cache_beside_the_image_cache(tmp_path, sample_photos, capsys):
    """The warm start's pooled vectors live in the one row layout (`pooled-KEY/`): an interrupted pass resumes to
    the same bytes, a finished one is reused, another backbone gets its own folder. The pass reports its
    progress (off a terminal: one line at its end; none when progress is off)."""
    from iaa_distill.data.records import ImageRecord
    from iaa_distill.storage import PROGRESS_DIR
    from iaa_distill.training.image_cache import ensure_image_cache
    from iaa_distill.training.warm_start import pooled_features
    from tests.conftest import write_jpegs

    paths = write_jpegs(tmp_path / "images", sample_photos, 5, size=40)
    cache = ensure_image_cache([ImageRecord(p.stem, p, "t") for p in paths], 32, root=tmp_path / "c", num_workers=0)
    student, rows = _student(), np.array([4, 0, 2])
    data = WarmStartData(cache.path, rows, np.zeros((3, 5)))
    first = pooled_features(student, data)
    assert "warm start (backbone features): 5/5 img" in capsys.readouterr().err
    folder, = cache.directory.glob("pooled-*")
    with torch.no_grad():
        images = torch.from_numpy(np.array(cache.pixels()[rows])).permute(0, 3, 1, 2).float() / 255
        np.testing.assert_allclose(first, student.raw_pooled(images).numpy(), rtol=1e-5, atol=1e-5)
    reference = (folder / "pooled.npy").read_bytes()

    journal = folder / PROGRESS_DIR / "rank0.log"
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    journal.write_text('{"rows": [0')  # killed before the first batch was committed
    np.testing.assert_array_equal(pooled_features(student, data), first)
    assert (folder / "pooled.npy").read_bytes() == reference
    other = _student(num_levels=None)
    other.backbone.conv_stem.weight.data.add_(1.0)
    capsys.readouterr()
    pooled_features(other, data, progress=False)
    assert len(list(cache.directory.glob("pooled-*"))) == 2 and "warm start" not in capsys.readouterr().err


def _record_epochs(rule: str, epochs: list[tuple[int, np.ndarray]], true: np.ndarray, tmp_path,
                   agreement: list[float | None] | None = None, agreement_patience: int = 0) -> list[dict]:
    """Feed (epoch, val predictions[, agreement with the teacher]) to a RecipeChoice over a progressive schedule
    (1 frozen, 1 partial epoch)."""
    from types import SimpleNamespace

    from iaa_distill.evaluation.metrics import srcc
    from iaa_distill.training.student_recipe import RecipeChoice

    saved = []
    choice = RecipeChoice(tmp_path, lambda module, entry: saved.append(entry["epoch"]), 16,
                          lambda e: phase(e, "progressive", 1, 1), rule, agreement_patience)
    for i, (epoch, pred) in enumerate(epochs):
        module = SimpleNamespace(val_predictions=(pred, true), val_agreement=None if agreement is None else agreement[i])
        choice.record(module, {"epoch": epoch, "val_srcc": srcc(true, pred)}, True)
        choice.history[-1]["ran_out"] = choice.agreement_ran_out()
    return choice.history


def test_teacher_rule_keeps_the_epoch_that_agrees_best_with_the_teacher(tmp_path):
    from dataclasses import replace

    from iaa_distill.training.student_recipe import TeacherAgreement, choice_lines, hold_out, kept_epoch, recipe_report

    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    better, worse = true + rng.normal(scale=0.3, size=40), true + rng.normal(scale=1.0, size=40)
    epochs = [(0, worse), (2, better), (3, worse)]
    history = _record_epochs("teacher", epochs, true, tmp_path, agreement=[0.90, 0.80, 0.95])
    assert history[1]["val_srcc"] > history[2]["val_srcc"]  # val labels prefer epoch 2, the teacher epoch 3
    assert kept_epoch(history)["epoch"] == 3 and [h["kept"] for h in history] == [True, False, True]
    held = TeacherAgreement(tmp_path / "images.npy", np.arange(171), np.zeros(171))
    report = recipe_report(history, 3, "progressive", 1, 1, 40, "teacher", held)
    assert report["chosen"] == "full" and report["teacher_scores"] == {"probe": 0.90, "partial": 0.80, "full": 0.95}
    assert report["agreement_on"] == "held-out unlabelled" and report["held_out"] == 171
    assert "171 held-out unlabelled photos" in report["selected_on"]
    on_val = recipe_report(history, 3, "progressive", 1, 1, 40, "teacher", replace(held, rows=np.arange(40), on="val"))
    assert on_val["agreement_on"] == "val" and "held_out" not in on_val and "40 val images" in on_val["selected_on"]
    assert "agreement with the teacher on the val images per recipe" in choice_lines(
        {"recipe": on_val, "best_val_srcc": None, "teacher_val_srcc": None, "best_epoch": 3})[0]
    # with nothing to agree on (the baseline: no teacher) the val labels decide, as `best`
    assert kept_epoch(_record_epochs("teacher", epochs, true, tmp_path))["epoch"] == 2
    # the held-out share is seeded, disjoint and kept in the records' order
    records = [ImageRecord(f"unlabeled/0/{i:03d}", None, "toy", "unlabeled") for i in range(100)]
    kept, held = hold_out(records, seed=0)
    ids = lambda rs: [r.image_id for r in rs]
    assert len(held) == 25 and sorted(ids(kept + held)) == ids(records) and ids(held) == sorted(ids(held))
    assert hold_out(records, seed=0) == (kept, held) and hold_out(records, seed=1)[1] != held
    assert hold_out(records[:40], seed=0) == (records[:40], [])  # 10 held out would be under MIN_HOLDOUT


def test_agreement_on_val_matches_the_validation_predictions_to_the_teacher_by_image(tmp_path):
    from iaa_distill.evaluation.metrics import srcc
    from iaa_distill.training.student_recipe import ON_VAL, TeacherAgreement

    rng = np.random.default_rng(3)
    ids = [f"img{i:02d}" for i in range(30)]
    teacher, pred = rng.normal(size=30), rng.normal(size=30)
    agreement = TeacherAgreement(tmp_path / "val.npy", np.arange(30), teacher, ON_VAL, ids)
    shuffled = rng.permutation(30)  # the order a validation pass gave them in (shards of two processes, say)
    value = agreement.of_predictions([ids[i] for i in shuffled], pred[shuffled])
    assert value == srcc(teacher, pred) and value != srcc(teacher, pred[shuffled])


def test_agreement_patience_stops_a_teacher_rule_run_once_epochs_in_a_row_agree_less_than_the_kept_one(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    epochs = [(e, true + rng.normal(scale=0.5, size=40)) for e in range(5)]
    history = _record_epochs("teacher", epochs, true, tmp_path, [0.98, 0.97, 0.99, 0.90, 0.91], agreement_patience=2)
    assert [h["ran_out"] for h in history] == [False, False, False, False, True]  # counted from the kept epoch 2
    assert not any(h["ran_out"] for h in _record_epochs("teacher", epochs, true, tmp_path, [0.98, 0.97, 0.99, 0.90,
                                                                                             0.91]))  # 0: never
    # without held-out photos (the baseline) the val labels choose and val SRCC's own early stopping applies
    assert not any(h["ran_out"] for h in _record_epochs("teacher", epochs, true, tmp_path, agreement_patience=1))


@pytest.mark.parametrize("rule", ["one-se", "best"])
def test_recipe_rule_keeps_the_simpler_recipe_unless_clearly_better(rule, tmp_path):
    from iaa_distill.evaluation.metrics import srcc
    from iaa_distill.training.student_recipe import kept_epoch, srcc_difference_se

    rng = np.random.default_rng(0)
    true = rng.normal(size=40)
    probe = true + rng.normal(scale=0.8, size=40)
    noisy = (probe + np.random.default_rng(s).normal(scale=0.3, size=40) for s in range(100))
    partial = next(p for p in noisy if 0 < srcc(true, p) - srcc(true, probe) < srcc_difference_se(true, p, probe))
    full = true + rng.normal(scale=0.2, size=40)  # far better
    history = _record_epochs(rule, [(0, probe), (2, partial)], true, tmp_path)
    assert history[1]["val_srcc"] > history[0]["val_srcc"]  # higher, but within one standard error
    assert kept_epoch(history)["epoch"] == (0 if rule == "one-se" else 2)
    history = _record_epochs(rule, [(0, probe), (2, partial), (3, full)], true, tmp_path)
    assert kept_epoch(history)["epoch"] == 3  # a clear gain wins under both rules
    if rule == "one-se":
        assert history[2]["vs_kept"]["epoch"] == 0 and history[2]["vs_kept"]["diff"] > history[2]["vs_kept"]["se"] > 0
