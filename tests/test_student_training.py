"""Stage 2: image cache, data module, distilled vs baseline training, resume, DDP, NaN stop, CLI refusals."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from iaa_distill.data.records import Dataset, ImageRecord, Label
from iaa_distill.data.table import SplitTable
from iaa_distill.errors import IAAError
from iaa_distill.imaging import decode_image
from iaa_distill.preprocessing import load_image_tensor
from iaa_distill.student import Student
from iaa_distill.targets import DistillationTargets
from iaa_distill.training import datamodule as dm
from iaa_distill.preprocessing import resize_whole
from iaa_distill.storage import PROGRESS_DIR
from iaa_distill.training.image_cache import MANIFEST, ensure_image_cache
from iaa_distill.training.student import TrainingDiverged, train_student
from iaa_distill.training.student_config import StudentTrainConfig
from tests.conftest import write_jpegs

K = 5
SCALE = (1.0, 5.0)
FEATURE_DIM = 16


def make_dataset(root: Path, photos, count: int = 40, corrupt: int = 0) -> Dataset:
    """`count` rated JPEGs (64x48): 28 train / 8 val / rest test; the last `corrupt` train files are broken."""
    paths = write_jpegs(root / "images", photos, count, size=64)
    rng = np.random.default_rng(1)
    records = []
    for i, path in enumerate(paths):
        split = "train" if i < 28 else "val" if i < 36 else "test"
        if split == "train" and 28 - corrupt <= i:
            path.write_bytes(b"not a jpeg")
        votes = tuple(float(v) for v in rng.integers(1, 30, K))
        records.append(ImageRecord(path.name, path, "toy", split, (), Label(SCALE, votes=votes)))
    return Dataset("toy", root, records, num_levels=K, scale=SCALE)


def make_targets(dataset: Dataset, out: Path, missing: int = 0) -> Path:
    """Teacher targets: a fixed positive feature pattern scaled by each image's brightness (+ noise) and
    per-image distributions."""
    records = dataset.records[missing:]
    ids = [r.image_id for r in records]
    rng = np.random.default_rng(2)
    pattern = rng.uniform(0.5, 1.5, FEATURE_DIM)
    brightness = np.array([float(load_image_tensor(r.path, 32).mean()) if r.path.stat().st_size > 100 else 0.5
                           for r in records])
    features = (np.outer(brightness, pattern) + 0.05 * rng.standard_normal((len(ids), FEATURE_DIM))).astype(np.float32)
    predictions = rng.dirichlet(np.ones(K), len(ids)).astype(np.float32)
    return DistillationTargets(ids, features, predictions, K, SCALE).save(out)


def tiny_config(**overrides) -> StudentTrainConfig:
    base = dict(backbone="test_efficientnet", pretrained=False, input_size=32, train_resize=40, epochs=2,
                batch_size=8, backbone_lr=3e-3, head_lr=1e-2, warmup_epochs=0.5, num_workers=0, patience=10)
    return StudentTrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def toy(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("toy")
    dataset = make_dataset(root, sample_photos)
    return dataset, make_targets(dataset, root / "teacher"), root / "cache"


# --- image cache -----------------------------------------------------------------------------


def test_image_cache_matches_preprocessing_lists_failures_and_resumes(tmp_path, sample_photos, caplog):
    dataset = make_dataset(tmp_path / "d", sample_photos, count=12)
    records = dataset.records
    records[3].path.write_bytes(b"\xff\xd8 truncated")
    records[7].path.unlink()
    cache = ensure_image_cache(records, 40, "bicubic", root=tmp_path / "c", num_workers=0, batch_size=2)
    assert set(cache.failed) == {records[3].image_id, records[7].image_id}
    assert records[7].image_id not in cache.valid_ids() and len(cache.valid_ids()) == 10
    pixels = cache.pixels()
    assert pixels.shape == (12, 40, 40, 3) and pixels.dtype == np.uint8
    expected = resize_whole(40, "bicubic")(decode_image(records[0].path, min_side=40)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels[0], expected)
    reference = np.array(pixels)

    # An interrupted build: manifest not complete, journal ends after 8 rows plus a torn line, later rows lost.
    folder = cache.directory
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "complete": False, "failed": {}}))
    journal = folder / PROGRESS_DIR / "rank0.log"
    lines = journal.read_text().splitlines()
    assert len(lines) == 6  # one committed line per batch of 2
    journal.write_text("\n".join(lines[:4]) + '\n{"rows": [8')
    with open(cache.path, "r+b") as f:
        f.seek(-4 * 40 * 40 * 3, 2)
        f.write(b"\x00" * 4 * 40 * 40 * 3)
    caplog.set_level(logging.INFO, logger="iaa_distill")
    caplog.clear()
    again = ensure_image_cache(records, 40, "bicubic", root=tmp_path / "c", num_workers=0, batch_size=2)
    assert "resuming 4 of 12" in caplog.text
    assert again.directory == folder and set(again.failed) == set(cache.failed)
    np.testing.assert_array_equal(again.pixels(), reference)


def test_sampler_is_seeded_per_epoch_and_shards_evenly(monkeypatch):
    sampler = dm.AugmentationSampler(10, resize=40, crop=32, seed=3)
    first = list(sampler)
    assert list(sampler) == first and sorted(i for i, *_ in first) == list(range(10))
    assert all(0 <= y <= 8 and 0 <= x <= 8 and f in (0, 1) for _, y, x, f in first)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    shards = []
    for rank in range(3):
        monkeypatch.setattr(dm, "_world", lambda rank=rank: (3, rank))
        shards.append(list(sampler))
    assert [len(s) for s in shards] == [4, 4, 4]
    assert {i for s in shards for i, *_ in s} == set(range(10))


def test_val_batches_equal_eval_preprocessing_and_train_batches_are_crops(toy):
    dataset, targets_dir, cache_root = toy
    val = [r for r in dataset.split("val")]
    train = dataset.split("train")
    val_cache = ensure_image_cache(val, 32, "bicubic", root=cache_root, num_workers=0)
    train_cache = ensure_image_cache(train, 40, "bicubic", root=cache_root, num_workers=0)
    targets = DistillationTargets.load(targets_dir)

    def split(records, cache):
        rows = targets.rows_for([r.image_id for r in records])
        ids = [r.image_id for r in records]
        return SplitTable(ids, cache.rows_for(ids), np.stack([r.label.distribution() for r in records]).astype(np.float32),
                          np.array([r.label.mean for r in records], np.float32),
                          targets.features[rows], targets.predictions[rows], source=cache.path)

    data = dm.StudentDataModule(split(train, train_cache), split(val, val_cache), 40, 32, batch_size=4, num_workers=0)
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 32, 32)
    for k in range(4):
        expected = load_image_tensor(val[k].path, 32, "bicubic")
        torch.testing.assert_close(batch["image"][k].float() / 255, expected, rtol=0, atol=1e-6)
    assert torch.allclose(batch["mean"][0], torch.tensor(val[0].label.mean))
    np.testing.assert_allclose(batch["feature"][1].numpy(), targets.features[targets.rows_for([val[1].image_id])[0]])
    train_batch = next(iter(data.train_dataloader()))
    assert train_batch["image"].shape == (4, 3, 32, 32) and train_batch["label"].shape == (4, K)
    full = torch.from_numpy(np.array(train_cache.pixels())).permute(0, 3, 1, 2)
    crop = train_batch["image"][0]
    found = any(torch.equal(window, crop) or torch.equal(window.flip(-1), crop)
                for img in full for y in range(9) for x in range(9) for window in [img[:, y:y + 32, x:x + 32]])
    assert found


# --- training --------------------------------------------------------------------------------


def _feature_gap(model_dir: Path, dataset: Dataset, targets_dir: Path) -> float:
    """MSE between a saved student's distilled feature (its projector's output) and the teacher's aesthetic
    feature on the val images, both standardised with the training images' statistics (1.0: no better than
    predicting the teacher's mean feature)."""
    model = Student.from_pretrained(model_dir)
    targets = DistillationTargets.load(targets_dir)
    train = targets.features[targets.rows_for([r.image_id for r in dataset.split("train")])]
    val = dataset.split("val")
    images = torch.stack([load_image_tensor(r.path, 32) for r in val])
    with torch.no_grad():
        feature = model.distilled_feature(model(images)[1])
    teacher = (targets.features[targets.rows_for([r.image_id for r in val])] - train.mean(0)) / train.std(0)
    return float(torch.mean((feature - torch.from_numpy(teacher)) ** 2))


def test_distilled_and_baseline_runs(toy, tmp_path):
    dataset, targets_dir, cache_root = toy
    config = tiny_config(alpha=5.0, beta=1.0, feature_dim=FEATURE_DIM)
    distilled = train_student(dataset, tmp_path / "distilled", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    # The baseline only checks the targets: same backbone and layers, no distillation projector.
    baseline = train_student(dataset, tmp_path / "baseline", config, targets_dir=targets_dir, baseline=True,
                             image_cache_dir=cache_root)
    for out, metrics in ((tmp_path / "distilled", distilled), (tmp_path / "baseline", baseline)):
        # epoch 0 is the warm-started model, validated before any gradient step
        assert metrics["epochs_completed"] == 2 and [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
        assert metrics["recipe"]["chosen"] in ("probe", "partial") and metrics["warm_start"]["warm_start"]["rows"] == 28
        assert math.isfinite(metrics["best_val_srcc"]) and -1 <= metrics["best_val_srcc"] <= 1
        assert (out / "checkpoints" / "last.ckpt").is_file()
        assert json.loads((out / "metrics.json").read_text()) == metrics
        model = Student.from_pretrained(out / "model")
        assert model.config.num_levels == K and model.config.feature_dim == FEATURE_DIM
        assert model.config.input_size == 32 and model.config.extra["baseline"] == (out.name == "baseline")
        mean, dist = model.predict(torch.rand(2, 3, 32, 32))
        assert dist.shape == (2, K) and torch.all((mean >= 1) & (mean <= 5))
    assert baseline["alpha"] == baseline["beta"] == 0 and distilled["alpha"] == 5.0
    assert distilled["num_train"] == 28 and distilled["num_val"] == 8
    # The distilled student's projector predicts the teacher's feature on unseen images; the baseline has none,
    # and its warm start (the frozen-feature linear probe) is kept as probe/.
    assert Student.from_pretrained(tmp_path / "distilled" / "model").config.distill_dim == FEATURE_DIM
    assert _feature_gap(tmp_path / "distilled" / "model", dataset, targets_dir) < 0.6
    probe = Student.from_pretrained(tmp_path / "baseline" / "probe")
    assert probe.config.distill_dim == 0 and probe.config.extra["epoch"] == 0
    assert not (tmp_path / "distilled" / "probe").exists()
    # A rerun of a finished run returns its result without training again.
    again = train_student(dataset, tmp_path / "baseline", config, targets_dir=targets_dir, baseline=True,
                          image_cache_dir=cache_root)
    assert again == baseline
    with pytest.raises(IAAError, match="other settings.*train.epochs"):
        train_student(dataset, tmp_path / "baseline", replace(config, epochs=3), targets_dir=targets_dir,
                      baseline=True, image_cache_dir=cache_root)


class RescoredAgreement(Callback):
    """After each validation: the validated model's agreement with the teacher, scored again on the images."""

    def __init__(self):
        self.seen: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        from iaa_distill.evaluation.metrics import srcc
        from iaa_distill.training.warm_start import cached_images, predict_raw

        agreement = pl_module.agreement
        raw = predict_raw(pl_module.eval_model, cached_images(agreement.source, agreement.rows, 32))
        self.seen.append(srcc(agreement.teacher_means, pl_module.space.mean(raw).double().numpy()))


def test_teacher_rule_without_unlabelled_photos_agrees_with_the_teacher_on_val(toy, tmp_path, monkeypatch):
    """Nothing to hold out: a distilled run keeps the epoch whose val scores agree best with the teacher's
    predictions on the val images (the validation pass's own predictions: the val images are not scored
    again); the baseline, which never sees the teacher, keeps the best val SRCC."""
    from iaa_distill.training import student_recipe
    from iaa_distill.training.student_recipe import choice_lines

    dataset, targets_dir, cache_root = toy
    config = tiny_config(epochs=3, deterministic=True, recipe_rule="teacher")
    read = []
    monkeypatch.setattr(student_recipe, "cached_images", lambda *a, **k: read.append(a) or iter(()))
    rescored = RescoredAgreement()
    distilled = train_student(dataset, tmp_path / "distilled", replace(config, num_workers=2),  # same batches
                              targets_dir=targets_dir, image_cache_dir=cache_root, callbacks=[rescored])
    assert read == []  # agreement never re-read the val images
    agreement = [h["teacher_srcc"] for h in distilled["history"]]
    assert len(agreement) == 4 and distilled["best_epoch"] == int(np.argmax(agreement))  # first of ties
    assert agreement[1:] == pytest.approx(rescored.seen, abs=1e-12)  # what scoring them again gives
    recipe = distilled["recipe"]
    assert recipe["agreement_on"] == "val" and "held_out" not in recipe and "8 val images" in recipe["selected_on"]
    assert "agreement with the teacher on the val images" in choice_lines(distilled)[0]
    baseline = train_student(dataset, tmp_path / "baseline", config, targets_dir=targets_dir, baseline=True,
                             image_cache_dir=cache_root)
    assert not any("teacher_srcc" in h for h in baseline["history"]) and "agreement_on" not in baseline["recipe"]
    best = max(baseline["history"], key=lambda h: h["val_srcc"])
    assert baseline["best_epoch"] == best["epoch"]


class Crash(Exception):
    pass


class CrashMidEpoch(Callback):
    """Simulates a kill: raises in the middle of the 2nd epoch, after some weight updates."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise Crash()


def crashed_then_resumed(train, out: Path) -> dict:
    """`train(out, callbacks)` crashed mid-epoch by `CrashMidEpoch`, then run again: the resumed run's result."""
    with pytest.raises(Crash):
        train(out, [CrashMidEpoch()])
    return train(out, [])


def assert_same_weights(a: Path, b: Path) -> None:
    """The saved models in run folders `a` and `b` hold bit-identical weights."""
    x, y = (load_file(str(run / "model" / "model.safetensors")) for run in (a, b))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_resume_after_crash_equals_uninterrupted_run(toy, tmp_path, caplog):
    dataset, targets_dir, cache_root = toy
    config = tiny_config(epochs=3, ema=True, ema_decay=0.9, deterministic=True)
    whole = train_student(dataset, tmp_path / "whole", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    with pytest.raises(Crash):
        train_student(dataset, tmp_path / "resumed", config, targets_dir=targets_dir, image_cache_dir=cache_root,
                      callbacks=[CrashMidEpoch()])
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
    caplog.set_level(logging.INFO, logger="iaa_distill")
    caplog.clear()
    resumed = train_student(dataset, tmp_path / "resumed", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    assert f"resuming from {last}" in caplog.text
    keys = ("epoch", "step", "val_srcc", "val_plcc", "val_loss", "train_loss")
    assert [{k: h.get(k) for k in keys} for h in resumed["history"]] == [{k: h.get(k) for k in keys} for h in whole["history"]]
    assert resumed["best_val_srcc"] == whole["best_val_srcc"]
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")


class PoisonWeights(Callback):
    """Makes the loss NaN from the 2nd epoch on (as a diverging run would)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.model.head[1].weight.fill_(float("nan"))


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(toy, tmp_path):
    dataset, targets_dir, cache_root = toy
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="loss is not finite at epoch 2"):
        train_student(dataset, out, tiny_config(epochs=3), targets_dir=targets_dir, image_cache_dir=cache_root,
                      callbacks=[PoisonWeights()])
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in load_file(str(out / "model" / "model.safetensors")).values())


def test_refusals(toy, tmp_path, sample_photos):
    dataset, targets_dir, cache_root = toy
    with pytest.raises(IAAError, match="needs the teacher's targets"):
        train_student(dataset, tmp_path / "a", tiny_config(), image_cache_dir=cache_root)
    partial = make_targets(dataset, tmp_path / "partial", missing=3)
    with pytest.raises(IAAError, match="have no distillation target"):
        train_student(dataset, tmp_path / "b", tiny_config(), targets_dir=partial, image_cache_dir=cache_root)
    scalar = DistillationTargets([r.image_id for r in dataset.records], np.zeros((40, 4), np.float32),
                                 np.zeros(40, np.float32), None, SCALE).save(tmp_path / "scalar")
    with pytest.raises(IAAError, match="other labels"):
        train_student(dataset, tmp_path / "c", tiny_config(), targets_dir=scalar, image_cache_dir=cache_root)
    targets = DistillationTargets.load(targets_dir)
    targets.features[5, 2] = np.nan
    with pytest.raises(IAAError, match=f"targets of 1 images are not finite.*'{targets.ids[5]}'"):
        train_student(dataset, tmp_path / "f", tiny_config(), targets_dir=targets.save(tmp_path / "nan_targets"),
                      image_cache_dir=cache_root)
    small = Dataset("small", dataset.root, [r for r in dataset.records if r.split != "train"] + dataset.split("train")[:10],
                    num_levels=K, scale=SCALE)
    with pytest.raises(IAAError, match="10 labelled training images"):
        train_student(small, tmp_path / "d", tiny_config(), baseline=True, image_cache_dir=cache_root)
    # Undecodable images are excluded; if too few remain, the run is refused after the cache reports them.
    broken = make_dataset(tmp_path / "broken", sample_photos, corrupt=14)
    with pytest.raises(IAAError, match="14 labelled training images"):
        train_student(broken, tmp_path / "e", tiny_config(), baseline=True, image_cache_dir=tmp_path / "bc")


def test_ddp_two_cpu_processes(toy, tmp_path):
    dataset, targets_dir, cache_root = toy
    # epoch 1 has a frozen backbone, epoch 2 a partly frozen one: DDP must accept parameters without gradients
    config = tiny_config(epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn")
    metrics = train_student(dataset, tmp_path / "ddp", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    assert metrics["world_size"] == 2 and metrics["epochs_completed"] == 2
    # 28 images / (8 per process x 2 processes) = 1 optimizer step per epoch
    assert metrics["history"][1]["step"] == 1 and math.isfinite(metrics["best_val_srcc"])
    assert Student.from_pretrained(tmp_path / "ddp" / "model").config.distill_dim == FEATURE_DIM  # the projector


# --- CLI -------------------------------------------------------------------------------------


def _write_csv(folder: Path, photos) -> Path:
    paths = write_jpegs(folder, photos, 40, size=64)
    rng = np.random.default_rng(0)
    lines = ["image,votes_1,votes_2,votes_3,votes_4,votes_5,split"]
    for i, path in enumerate(paths):
        split = "train" if i < 28 else "val" if i < 36 else "test"
        lines.append(",".join([path.name, *(str(v) for v in rng.integers(1, 30, 5)), split]))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def test_cli_baseline_with_bundled_weights_and_refusal(tmp_path, sample_photos, capsys):
    from iaa_distill.cli import main

    labels = _write_csv(tmp_path / "csv", sample_photos)
    common = [f"csv:{labels}", "--input-size", "32", "--train-resize", "40", "--epochs", "1", "--batch-size", "8",
              "--workers", "0", "--image-cache", str(tmp_path / "cache")]
    assert main(["train-student", *common, "--out", str(tmp_path / "run")]) == 1
    assert "iaa: error: distillation (alpha or beta > 0) needs the teacher's targets" in capsys.readouterr().err
    assert main(["train-student", *common, "--out", str(tmp_path / "run"), "--baseline"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.rindex('{\n  "out"'):])
    assert summary["baseline"] is True and summary["epochs_completed"] == 1
    model = Student.from_pretrained(tmp_path / "run" / "model")
    assert model.config.backbone == "tf_efficientnet_lite0"
    assert model.config.backbone_weights.startswith("bundled:")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["baseline"] is True


@pytest.mark.slow
def test_compiled_channels_last_training_saves_plain_weights(toy, tmp_path):
    """--compile with channels_last (the GPU speed options) trains and saves weights that load uncompiled."""
    dataset, targets_dir, cache_root = toy
    config = tiny_config(epochs=1, compile=True, channels_last=True)
    metrics = train_student(dataset, tmp_path / "compiled", config, targets_dir=targets_dir, image_cache_dir=cache_root)
    assert metrics["epochs_completed"] == 1 and math.isfinite(metrics["best_val_srcc"])
    weights = load_file(tmp_path / "compiled" / "model" / "model.safetensors")
    assert not any("_orig_mod" in key for key in weights)
    model = Student.from_pretrained(tmp_path / "compiled" / "model")
    mean, _ = model.predict(torch.rand(2, 3, 32, 32))
    assert torch.isfinite(mean).all()
