"""Stage 1 on a real feature cache (written through the cache's writer API) with learnable synthetic labels."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from iaa_distill.cli import main
from iaa_distill.data.records import Dataset, ImageRecord, Label, level_values
from iaa_distill.errors import IAAError
from iaa_distill.features import FeatureCache
from iaa_distill.features.cache import FEATURES_NAME, FORMAT, FORMAT_VERSION, create_cache, finalize_manifest
from iaa_distill.storage import RowWriter
from iaa_distill.targets import DistillationTargets
from iaa_distill.teacher_head import TeacherHead, TeacherHeadConfig, predict_features
from iaa_distill.training.teacher import TeacherTrainConfig, train_teacher_head
from tests.test_readers import touch_images

DIM = 24
# The MLP alone (no cross-validation): these tests check its training loop; test_head_selection.py checks the choice.
FAST = dict(epochs=12, batch_size=32, lr=3e-3, hidden=(64, 16), dropout=0.1, patience=12, progress=False,
            candidates=("mlp",))


def synthetic_features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and a latent quality in [-1, 1] that is a smooth function of them."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, DIM)).astype(np.float32)
    w = rng.normal(size=DIM) / np.sqrt(DIM)
    return features, np.tanh(features @ w + 0.3 * features[:, 0] * features[:, 1])


def synthetic_dataset(quality: np.ndarray, num_levels: int | None = 10, name: str = "synthetic") -> Dataset:
    """Records split 70/15/15; K-level labels are vote histograms centred on the quality, else scalar scores on 0..100."""
    n = len(quality)
    records = []
    for i, q in enumerate(quality):
        split = "train" if i < 0.7 * n else "val" if i < 0.85 * n else "test"
        if num_levels:
            centre = 5.5 + 3.0 * q
            votes = tuple(float(round(100 * np.exp(-(v - centre) ** 2 / 2) + 1)) for v in level_values(10, (1, 10)))
            label = Label(scale=(1.0, 10.0), votes=votes)
        else:
            label = Label(scale=(0.0, 100.0), score=float(50 + 40 * q))
        records.append(ImageRecord(f"img/{name}_{i:04d}.jpg", Path(f"img/{i}.jpg"), name, split, (), label))
    return Dataset(name, Path("."), records, num_levels=num_levels, scale=(1.0, 10.0) if num_levels else (0.0, 100.0))


def write_cache(directory: Path, dataset: Dataset, features: np.ndarray, failed: dict[int, str] | None = None) -> FeatureCache:
    """A feature cache through the cache's own writer: manifest, float16 rows, progress log, final manifest."""
    failed = failed or {}
    ids = [r.image_id for r in dataset.records]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dim": DIM, "hflip": False,
        "teachers": [{"name": "synthetic_teacher", "dim": DIM, "offset": 0}],
        "preprocessing": {"view": "synthetic"},
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "split": "all", "num_images": len(ids)},
    }
    create_cache(directory, manifest, ids)
    writer = RowWriter(directory, FEATURES_NAME, 0)
    rows = [r for r in range(len(ids)) if r not in failed]
    writer.write(rows, features[rows], failed)
    writer.close()
    finalize_manifest(directory)
    return FeatureCache.open(directory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One K-level training run shared by the checks below."""
    root = tmp_path_factory.mktemp("stage1")
    features, quality = synthetic_features(400)
    dataset = synthetic_dataset(quality)
    cache = write_cache(root / "cache", dataset, features, failed={3: "broken.jpg: cannot identify image file"})
    metrics = train_teacher_head(dataset, root / "cache", root / "head", TeacherTrainConfig(**FAST))
    return root, dataset, cache, metrics


def test_head_roundtrip(tmp_path):
    config = TeacherHeadConfig(input_dim=DIM, num_levels=10, hidden=(32, 8), teachers=[{"name": "a"}],
                               cache_fingerprint="abc", dataset_fingerprint="def")
    head = TeacherHead(config)
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive the roundtrip too
        head.body[0].running_mean.uniform_(-1, 1)
    head.save_pretrained(tmp_path)
    loaded = TeacherHead.from_pretrained(tmp_path)
    assert loaded.config == config
    x = torch.randn(5, DIM)
    raw, feature = head.eval()(x)
    raw2, feature2 = loaded(x)
    assert raw.shape == (5, 10) and feature.shape == (5, 8)
    assert torch.equal(raw, raw2) and torch.equal(feature, feature2)
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "teacher_head"


def test_predict_features_k_level_and_scalar():
    x = np.random.default_rng(1).normal(size=(7, DIM)).astype(np.float16)
    head = TeacherHead(TeacherHeadConfig(input_dim=DIM, num_levels=10, hidden=(16, 8))).eval()
    mean, dist = predict_features(head, x, batch_size=3)
    expected = torch.softmax(head(torch.from_numpy(x.astype(np.float32)))[0], -1).detach().numpy()
    np.testing.assert_allclose(dist, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, dist @ np.arange(1, 11), rtol=1e-5)
    scalar = TeacherHead(TeacherHeadConfig(input_dim=DIM, num_levels=None, scale=(0.0, 100.0), hidden=(16, 8))).eval()
    mean, dist = predict_features(scalar, x)
    raw = scalar(torch.from_numpy(x.astype(np.float32)))[0].detach().numpy()[:, 0]
    assert dist is None
    np.testing.assert_allclose(mean, 100 * raw, rtol=1e-5, atol=1e-4)


def test_training_learns_the_score(trained):
    root, dataset, cache, metrics = trained
    assert metrics["val"]["srcc"] > 0.8 and metrics["test"]["srcc"] > 0.8
    assert metrics["val"]["count"] == 60 and metrics["test"]["count"] == 60
    assert metrics["train_images"] == 279  # one training image failed to decode
    assert json.loads((root / "head" / "metrics.json").read_text())["test"] == metrics["test"]
    assert (root / "head" / "logs").is_dir() and not (root / "head" / "checkpoints").exists()
    # the saved head reproduces the reported test SRCC from the cache
    head = TeacherHead.from_pretrained(root / "head")
    test = [r for r in dataset.split("test")]
    mean, dist = predict_features(head, cache.features_for([r.image_id for r in test]))
    assert stats.spearmanr(mean, [r.label.mean for r in test])[0] == pytest.approx(metrics["test"]["srcc"], abs=1e-6)
    assert head.config.teachers == cache.manifest["teachers"] and head.config.input_dim == DIM
    assert head.config.dataset_fingerprint == dataset.fingerprint()


def test_targets_for_every_valid_image(trained):
    root, dataset, cache, metrics = trained
    targets = DistillationTargets.load(root / "head")
    assert targets.ids == cache.valid_ids() and len(targets.ids) == 399  # all splits, minus the failed image
    assert dataset.records[3].image_id not in targets.ids
    assert targets.features.shape == (399, 16) and targets.predictions.shape == (399, 10)
    assert targets.num_levels == 10 and targets.scale == (1.0, 10.0)
    np.testing.assert_allclose(targets.predictions.sum(axis=1), 1.0, rtol=1e-5)
    assert (targets.features >= 0).all() and targets.features.std() > 0  # post-ReLU aesthetic feature
    head = TeacherHead.from_pretrained(root / "head")
    rows = targets.rows_for([r.image_id for r in dataset.split("val")])
    _, dist = predict_features(head, cache.features_for([r.image_id for r in dataset.split("val")]))
    np.testing.assert_allclose(targets.predictions[rows], dist, rtol=1e-4, atol=1e-6)


def test_scalar_labels_with_rank_loss(tmp_path):
    features, quality = synthetic_features(300, seed=2)
    dataset = synthetic_dataset(quality, num_levels=None)
    write_cache(tmp_path / "cache", dataset, features)
    config = TeacherTrainConfig(**{**FAST, "loss": "mse", "rank_weight": 0.5})
    metrics = train_teacher_head(dataset, tmp_path / "cache", tmp_path / "head", config)
    assert metrics["val"]["srcc"] > 0.8
    targets = DistillationTargets.load(tmp_path / "head")
    assert targets.predictions.shape == (300,) and targets.num_levels is None and targets.scale == (0.0, 100.0)
    assert TeacherHead.from_pretrained(tmp_path / "head").config.output_dim == 1


def test_refuses_cache_of_another_dataset(tmp_path):
    features, quality = synthetic_features(60)
    write_cache(tmp_path / "cache", synthetic_dataset(quality, name="first"), features)
    with pytest.raises(IAAError, match="made for dataset 'first'"):
        train_teacher_head(synthetic_dataset(quality, name="second"), tmp_path / "cache", tmp_path / "head",
                           TeacherTrainConfig(**FAST))
    assert not (tmp_path / "head" / "config.json").exists()


def test_refuses_too_few_images(tmp_path):
    features, quality = synthetic_features(10)
    dataset = synthetic_dataset(quality)
    write_cache(tmp_path / "cache", dataset, features)
    with pytest.raises(IAAError, match="only 7 labelled training images"):
        train_teacher_head(dataset, tmp_path / "cache", tmp_path / "head", TeacherTrainConfig(**FAST))


def test_nan_features_stop_with_clear_error(tmp_path):
    features, quality = synthetic_features(80)
    features[5, 2] = np.nan
    dataset = synthetic_dataset(quality)
    write_cache(tmp_path / "cache", dataset, features)
    with pytest.raises(IAAError, match=f"features of image '{dataset.records[5].image_id}' are not finite"):
        train_teacher_head(dataset, tmp_path / "cache", tmp_path / "head", TeacherTrainConfig(**FAST))


def test_cli(tmp_path, capsys):
    features, quality = synthetic_features(120, seed=3)
    lines = ["image,score,split"]
    for i, q in enumerate(quality):
        lines.append(f"photos/{i}.jpg,{5.5 + 4 * q:.3f},{'test' if i % 5 == 0 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    from iaa_distill.data import open_dataset

    spec = f"csv:{tmp_path / 'labels.csv'}?scale=1,10"
    touch_images(open_dataset(spec))  # val is carved from the found train images
    dataset = open_dataset(spec, val_fraction=0.2, seed=0)
    write_cache(tmp_path / "cache", dataset, features[[int(r.image_id.split("/")[1][:-4]) for r in dataset.records]])
    args = ["train-teacher", spec, "--features", str(tmp_path / "cache"), "--out", str(tmp_path / "head"),
            "--epochs", "3", "--batch-size", "16", "--hidden", "32,8", "--val-fraction", "0.2", "--no-progress",
            "--candidates", "mlp"]
    assert main(args) == 0
    assert "val SRCC" in capsys.readouterr().out
    assert DistillationTargets.load(tmp_path / "head").features.shape == (120, 8)
    assert TeacherHead.from_pretrained(tmp_path / "head").config.scale == (1.0, 10.0)

    other = tmp_path / "other.csv"
    other.write_text("\n".join(lines[:60]) + "\n")
    assert main(["train-teacher", f"csv:{other}?scale=1,10", "--features", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "head2"), "--no-progress"]) == 1
    assert "iaa: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train-teacher", spec, "--features", "x", "--out", "y", "--hidden", "a,b"])
    assert exit_info.value.code == 2


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    from iaa_distill.training.teacher import TeacherHeadModule

    features, quality = synthetic_features(120, seed=4)
    dataset = synthetic_dataset(quality)
    write_cache(tmp_path / "cache", dataset, features)
    config = TeacherTrainConfig(**{**FAST, "epochs": 5, "hidden": (32, 8), "dropout": 0.3})
    reference = train_teacher_head(dataset, tmp_path / "cache", tmp_path / "reference", config)

    def crash(self):
        if self.current_epoch == 3:
            raise RuntimeError("killed")
    monkeypatch.setattr(TeacherHeadModule, "on_train_epoch_end", crash, raising=False)
    with pytest.raises(RuntimeError, match="killed"):
        train_teacher_head(dataset, tmp_path / "cache", tmp_path / "run", config)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.undo()
    resumed = train_teacher_head(dataset, tmp_path / "cache", tmp_path / "run", config)
    assert resumed["val"] == reference["val"] and resumed["test"] == reference["test"]
    second_log = (tmp_path / "run" / "logs" / "version_1" / "metrics.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in second_log[1:]} == {"3", "4"}  # it went on, not from scratch
    targets, expected = DistillationTargets.load(tmp_path / "run"), DistillationTargets.load(tmp_path / "reference")
    np.testing.assert_array_equal(targets.features, expected.features)


def test_real_feature_cache_from_bundled_teacher(tmp_path, sample_photos):
    """End to end on a cache extracted by `extract_features` with the bundled ImageNet lite0 teacher."""
    from iaa_distill.data import open_dataset
    from iaa_distill.features import ExtractionSettings, extract_features
    from tests.conftest import write_jpegs

    paths = write_jpegs(tmp_path / "photos", sample_photos, 16, 64)
    scores = np.random.default_rng(0).uniform(1, 10, len(paths))
    rows = [f"{p.relative_to(tmp_path)},{s:.2f},{'test' if i % 4 == 0 else 'train'}"
            for i, (p, s) in enumerate(zip(paths, scores))]
    (tmp_path / "labels.csv").write_text("image,score,split\n" + "\n".join(rows) + "\n")
    dataset = open_dataset(f"csv:{tmp_path / 'labels.csv'}?scale=1,10", val_fraction=0.25)
    cache = extract_features(dataset, tmp_path / "cache", ExtractionSettings(("tf_efficientnet_lite0",), batch_size=16,
                                                                             num_workers=0, progress=False))
    metrics = train_teacher_head(dataset, tmp_path / "cache", tmp_path / "head",
                                 TeacherTrainConfig(**{**FAST, "epochs": 2, "batch_size": 4, "hidden": (16, 8)}))
    head = TeacherHead.from_pretrained(tmp_path / "head")
    assert head.config.input_dim == cache.dim and head.config.teachers[0]["name"] == "tf_efficientnet_lite0"
    assert metrics["targets"] == 16 and DistillationTargets.load(tmp_path / "head").ids == cache.ids
