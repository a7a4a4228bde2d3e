"""The teacher head chosen by cross-validation on the training split: the better candidate wins, the test
split is never read, the linear head saves and reloads as a normal teacher head, metrics.json records the choice."""
import json
import logging

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from iaa_distill.errors import IAAError
from iaa_distill.score_space import ScoreSpace
from iaa_distill.targets import DistillationTargets
from iaa_distill.teacher_head import TeacherHead, TeacherHeadConfig, predict_features, run_head
from iaa_distill.training import head_selection
from iaa_distill.training.head_candidates import (RIDGE_ALPHAS, candidate_config, fit_ridge_head, parse_candidate,
                                                  ridge_targets)
from iaa_distill.training.head_selection import CandidateScore, cross_validate
from iaa_distill.training.teacher import TeacherTrainConfig, train_teacher_head
from tests.test_teacher_head import DIM, synthetic_dataset, write_cache

MLP = dict(epochs=6, batch_size=16, lr=3e-3, hidden=(256, 64), dropout=0.0, patience=6, progress=False, cv_folds=4)


def linear_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Few samples, a purely linear quality: a ridge fits it, an unregularised wide MLP overfits."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, DIM)).astype(np.float32)
    return features, np.tanh(features @ (rng.normal(size=DIM) / np.sqrt(DIM)))


def test_parse_candidates():
    assert parse_candidate("mlp", (64, 16), 0.1).hidden == (64, 16)
    other = parse_candidate("mlp:256,64:0.5", (64, 16), 0.1)
    assert (other.kind, other.hidden, other.dropout) == ("mlp", (256, 64), 0.5)
    assert parse_candidate("ridge:3", (64,), 0.1).rank == 3
    for bad in ("ridge", "ridge:0", "mlp:a:0.1", "mlp:8:1.5", "tree"):
        with pytest.raises(IAAError, match="not understood"):
            parse_candidate(bad, (64,), 0.1)


@pytest.mark.parametrize("num_levels", [10, None])
def test_ridge_head_is_a_teacher_head_that_reloads(tmp_path, num_levels):
    features, quality = linear_data(60)
    dataset = synthetic_dataset(quality, num_levels=num_levels)
    base = TeacherHeadConfig(input_dim=DIM, num_levels=num_levels, scale=(1.0, 10.0) if num_levels else (0.0, 100.0))
    config = candidate_config(parse_candidate("ridge:3", (8,), 0.0), base, base.output_dim)
    labels, means = ScoreSpace(num_levels, base.scale).encode_all([r.label for r in dataset.records],
                                                                  [r.image_id for r in dataset.records])
    head = fit_ridge_head(features, labels, config)
    head.save_pretrained(tmp_path / "ridge")
    again = TeacherHead.from_pretrained(tmp_path / "ridge")
    raw, aesthetic = run_head(head, features)
    raw2, aesthetic2 = run_head(again, features)
    np.testing.assert_allclose(raw2, raw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aesthetic2, aesthetic, rtol=1e-5, atol=1e-5)
    assert aesthetic.shape[1] == config.feature_dim == 2 * min(3, base.output_dim) and aesthetic.min() >= 0
    predicted, _ = predict_features(again, features)
    assert np.corrcoef(predicted, means)[0, 1] > 0.9
    assert again.config.input_power == 0.5 and TeacherHeadConfig.from_dict({"input_dim": DIM}).input_power == 1.0


TWO_BLOCKS = [{"name": "a", "offset": 0, "level_dims": [4]}, {"name": "b", "offset": 4, "level_dims": [DIM - 4]}]


@pytest.mark.parametrize("num_levels", [10, None])
def test_full_rank_ridge_head_computes_the_ridge_prediction(num_levels):
    """At full rank the network's raw output is sklearn's multi-output ridge prediction on the normalised features:
    signed square root, standardised, each block (4 and 20 values wide here) scaled to the same total variance."""
    features, quality = linear_data(50, seed=5)
    dataset = synthetic_dataset(quality, num_levels=num_levels)
    base = TeacherHeadConfig(input_dim=DIM, num_levels=num_levels, scale=(1.0, 10.0) if num_levels else (0.0, 100.0),
                             teachers=TWO_BLOCKS)
    labels, _ = base.space.encode_all([r.label for r in dataset.records], [r.image_id for r in dataset.records])
    config = candidate_config(parse_candidate("ridge:10", (8,), 0.0), base, base.output_dim)
    raw, _ = run_head(fit_ridge_head(features, labels, config), features)
    x = np.sign(features) * np.sqrt(np.abs(features.astype(np.float64)))
    standard = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5)
    standard[:, :4] *= np.sqrt(DIM / (2 * 4))
    standard[:, 4:] *= np.sqrt(DIM / (2 * (DIM - 4)))
    assert np.allclose(standard[:, :4].var(axis=0).sum(), standard[:, 4:].var(axis=0).sum(), rtol=1e-3)
    expected = RidgeCV(alphas=RIDGE_ALPHAS).fit(standard, ridge_targets(labels, base.space)).predict(standard)
    np.testing.assert_allclose(raw, expected.reshape(raw.shape), atol=2e-4)


def test_ridge_head_weighs_blocks_not_their_widths():
    """A narrow block that carries the score beside a wide block of noise: scaled to equal total variance, the
    narrow block is penalised as much as the wide one, and the held-out ranking is far better than with every
    value standardised alike (one block)."""
    rng = np.random.default_rng(4)
    signal, noise = rng.normal(size=(120, 4)), rng.normal(size=(120, 400))
    features = np.concatenate([signal, noise], axis=1).astype(np.float32)
    means = signal @ np.array([1.0, -0.8, 0.6, 0.4])
    blocks = [{"offset": 0, "level_dims": [4]}, {"offset": 4, "level_dims": [400]}]
    scores = {}
    for name, teachers in (("blocks", blocks), ("one block", [])):
        base = TeacherHeadConfig(input_dim=404, num_levels=None, scale=(0.0, 1.0), teachers=teachers)
        config = candidate_config(parse_candidate("ridge:1", (8,), 0.0), base, base.output_dim)
        head = fit_ridge_head(features[:60], (means[:60] - means.min()) / np.ptp(means), config)
        predicted, _ = predict_features(head, features[60:])
        scores[name] = np.corrcoef(np.argsort(np.argsort(predicted)), np.argsort(np.argsort(means[60:])))[0, 1]
    assert scores["blocks"] > scores["one block"] + 0.15 and scores["blocks"] > 0.9


def test_cv_prefers_ridge_on_few_linear_samples():
    features, quality = linear_data(40, seed=1)
    dataset = synthetic_dataset(quality)
    labels, means = ScoreSpace(10, (1.0, 10.0)).encode_all([r.label for r in dataset.records], [r.image_id for r in dataset.records])
    base = TeacherHeadConfig(input_dim=DIM)
    config = TeacherTrainConfig(**MLP)
    candidates = [parse_candidate(s, config.hidden, config.dropout) for s in ("mlp", "ridge:2")]
    scores = cross_validate(candidates, features, labels, means, base, config, config.cv_folds)
    assert [len(s.fold_srcc) for s in scores] == [4, 4]
    assert head_selection.choose(scores).candidate.kind == "ridge"
    assert scores[1].mean > scores[0].mean + 0.1 and scores[1].mean > 0.6


@pytest.mark.parametrize("progress", [True, False])
def test_cv_shows_its_progress_when_asked(capsys, progress):
    """The teacher stage's cross-validation is its long part (tens of seconds on a few dozen ratings)."""
    features, quality = linear_data(20, seed=1)
    labels, means = ScoreSpace(10, (1.0, 10.0)).encode_all(
        [r.label for r in synthetic_dataset(quality).records], [f"{i}" for i in range(20)])
    config = TeacherTrainConfig(**{**MLP, "progress": progress})
    candidates = [parse_candidate(s, config.hidden, config.dropout) for s in ("ridge:2", "ridge:4")]
    cross_validate(candidates, features, labels, means, TeacherHeadConfig(input_dim=DIM), config, 2)
    line = "teacher head (cross-validation): 4/4 fit in"  # off a terminal: one line at its end
    assert (line in capsys.readouterr().err) == progress


def test_cv_prefers_mlp_on_a_nonlinear_score():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(400, DIM)).astype(np.float32)  # 200 left the MLP at CV SRCC 0.14, a coin toss
    quality = np.tanh(features[:, 0] ** 2 - 1.0)  # symmetric: no linear map ranks it
    dataset = synthetic_dataset(quality)
    labels, means = ScoreSpace(10, (1.0, 10.0)).encode_all([r.label for r in dataset.records],
                                                            [r.image_id for r in dataset.records])
    config = TeacherTrainConfig(**{**MLP, "epochs": 25, "batch_size": 32, "lr": 1e-2, "hidden": (64, 16), "cv_folds": 3})
    candidates = [parse_candidate(s, config.hidden, config.dropout) for s in ("ridge:2", "mlp")]
    scores = cross_validate(candidates, features, labels, means, TeacherHeadConfig(input_dim=DIM), config, 3)
    assert head_selection.choose(scores).candidate.kind == "mlp" and scores[1].mean > 0.6 > 0.2 > scores[0].mean


def test_cv_trains_its_mlps_with_the_heads_own_loop(monkeypatch):
    """The folds' MLPs go through the final head's LightningModule (one training loop), every fold every epoch."""
    from iaa_distill.training.head_loop import TeacherHeadModule

    features, quality = linear_data(40, seed=3)
    dataset = synthetic_dataset(quality)
    labels, means = ScoreSpace(10, (1.0, 10.0)).encode_all([r.label for r in dataset.records],
                                                            [r.image_id for r in dataset.records])
    steps, real = [], TeacherHeadModule.training_step

    def counting(self, batch, batch_idx):
        steps.append((self.current_epoch, len(batch["label"])))
        return real(self, batch, batch_idx)

    monkeypatch.setattr(TeacherHeadModule, "training_step", counting)
    config = TeacherTrainConfig(**{**MLP, "epochs": 2, "cv_folds": 2})
    candidates = [parse_candidate("mlp", config.hidden, config.dropout)]
    scores = cross_validate(candidates, features, labels, means, TeacherHeadConfig(input_dim=DIM), config, 2)
    assert len(scores[0].fold_srcc) == 2
    # 2 folds x 2 epochs x (20 fitting rows in batches of 16, the last batch of 4 kept)
    assert [epoch for epoch, _ in steps] == [0, 0, 1, 1] * 2 and {n for _, n in steps} == {16, 4}


def test_selection_reads_training_images_only_and_is_recorded(tmp_path, monkeypatch):
    features, quality = linear_data(100, seed=4)
    dataset = synthetic_dataset(quality)
    cache = write_cache(tmp_path / "cache", dataset, features)
    seen = []
    real = head_selection.cross_validate

    def spy(candidates, rows, labels, means, *args):
        seen.append((np.asarray(rows).copy(), np.asarray(means).copy()))
        return real(candidates, rows, labels, means, *args)

    monkeypatch.setattr("iaa_distill.training.teacher.cross_validate", spy)
    config = TeacherTrainConfig(**{**MLP, "candidates": ("mlp", "ridge:2")})
    metrics = train_teacher_head(dataset, cache, tmp_path / "head", config)

    train_rows = [i for i, r in enumerate(dataset.records) if r.split == "train"]
    (rows, means), = seen
    np.testing.assert_array_equal(rows, features[train_rows].astype(np.float16))  # the training split's rows, nothing else
    np.testing.assert_allclose(means, [dataset.records[i].label.mean for i in train_rows], rtol=1e-6)
    saved = json.loads((tmp_path / "head" / "metrics.json").read_text())
    assert saved["head"] == metrics["head"] and saved["head"]["cv_split"] == "train"
    assert saved["head"]["cv_images"] == len(train_rows) and saved["head"]["chosen"] == "ridge:2"
    assert [c["spec"] for c in saved["head"]["candidates"]] == ["mlp", "ridge:2"]
    assert all(len(c["fold_srcc"]) == 4 and c["srcc_sd"] >= 0 for c in saved["head"]["candidates"])
    head = TeacherHead.from_pretrained(tmp_path / "head")
    assert head.config.hidden == (4,) and metrics["test"]["srcc"] > 0.8
    assert DistillationTargets.load(tmp_path / "head").features.shape == (100, 4)
    # A rerun reads the recorded result; a resumed run reuses selection.json rather than redoing the folds.
    assert train_teacher_head(dataset, cache, tmp_path / "head", config) == metrics
    assert len(seen) == 1


def test_choice_prefers_the_simpler_head_within_one_standard_error():
    mlp, ridge = (parse_candidate(s, (64, 16), 0.1) for s in ("mlp", "ridge:2"))
    near = [CandidateScore(mlp, [0.70, 0.80, 0.75, 0.85]), CandidateScore(ridge, [0.70, 0.78, 0.74, 0.82])]
    assert head_selection.choose(near).candidate is ridge  # mlp's lead 0.015 < its standard error 0.032
    far = [CandidateScore(mlp, [0.80, 0.82, 0.81, 0.83]), CandidateScore(ridge, [0.70, 0.72, 0.71, 0.73])]
    assert head_selection.choose(far).candidate is mlp


def test_too_few_images_for_the_folds(tmp_path):
    features, quality = linear_data(20)
    dataset = synthetic_dataset(quality)
    write_cache(tmp_path / "cache", dataset, features)
    config = TeacherTrainConfig(**{**MLP, "candidates": ("mlp", "ridge:2"), "cv_folds": 10})
    with pytest.raises(IAAError, match="cross-validation"):
        train_teacher_head(dataset, tmp_path / "cache", tmp_path / "head", config)


def test_large_training_split_skips_the_folds(tmp_path, monkeypatch, caplog):
    features, quality = linear_data(60, seed=6)
    dataset = synthetic_dataset(quality)
    write_cache(tmp_path / "cache", dataset, features)
    monkeypatch.setattr("iaa_distill.training.teacher.CV_MAX_IMAGES", 10)
    caplog.set_level(logging.INFO, logger="iaa_distill")  # a library message (shown by the CLI, not printed)
    config = TeacherTrainConfig(**{**MLP, "hidden": (16, 8), "candidates": ("mlp", "ridge:2")})
    metrics = train_teacher_head(dataset, tmp_path / "cache", tmp_path / "head", config)
    assert metrics["head"]["chosen"] == "mlp" and metrics["head"]["candidates"] == []
    assert "no cross-validation" in caplog.text


@pytest.mark.parametrize("on_val", [False, True])
def test_linear_head_fits_on_train_and_val_when_asked(tmp_path, on_val):
    """`linear_on_val`: the chosen ridge head is the closed-form ridge of train + val (else of train only)."""
    features, quality = linear_data(60, seed=5)
    dataset = synthetic_dataset(quality, num_levels=None)
    cache = write_cache(tmp_path / "cache", dataset, features)
    config = TeacherTrainConfig(**{**MLP, "candidates": ("ridge:1",), "linear_on_val": on_val})
    train_teacher_head(dataset, cache, tmp_path / "head", config)
    head = TeacherHead.from_pretrained(tmp_path / "head")
    fitted = [i for i, r in enumerate(dataset.records) if r.split in (("train", "val") if on_val else ("train",))]
    stored = np.asarray(cache.features[fitted], np.float32)  # what the head was fitted on (float16 rows)
    labels, _ = head.config.space.encode_all([dataset.records[i].label for i in fitted], [str(i) for i in fitted])
    expected, _ = run_head(fit_ridge_head(stored, labels, head.config), features)
    np.testing.assert_allclose(run_head(head, features)[0], expected, rtol=1e-5, atol=1e-5)
