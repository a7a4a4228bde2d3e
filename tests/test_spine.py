"""The training spine's run folder (identity vs execution settings, checkpoint ownership) and the saved split."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from iaa_distill.cli import main
from iaa_distill.errors import IAAError
from iaa_distill.data.splits import load_split
from iaa_distill.settings import identity
from iaa_distill.training.spine import RunFolder
from iaa_distill.training.student_config import StudentTrainConfig
from iaa_distill.training.teacher import TeacherTrainConfig, train_teacher_head
from tests.test_readers import touch_images
from tests.test_teacher_head import FAST, synthetic_features, write_cache


def _folder(tmp_path, config) -> RunFolder:
    return RunFolder(tmp_path / "run", {"train": identity(config), "train_ids": "abc"})


def test_run_folder_resumes_with_other_execution_settings_and_refuses_other_identity(tmp_path):
    config = StudentTrainConfig()
    run = _folder(tmp_path, config)
    assert run.finished() is None and run.start(["a", "b"], ["c"]) is None
    run.last_checkpoint.parent.mkdir()
    torch.save({"iaa_run_fingerprint": run.fingerprint}, run.last_checkpoint)

    faster = _folder(tmp_path, replace(config, num_workers=16, progress=False, accelerator="gpu", compile=True))
    assert faster.finished() is None
    assert faster.start(["a", "b"], ["c"]) == run.last_checkpoint  # same run: resumes
    assert load_split(run.out) == {"train": ["a", "b"], "val": ["c"]}

    other = _folder(tmp_path, replace(config, head_lr=0.01, devices=2))
    with pytest.raises(IAAError, match=r"other settings \(changed: train.devices 'auto' -> 2; train.head_lr 0.001 -> 0.01\)"):
        other.finished()

    run.write_metrics({"best_val_srcc": 0.5})
    assert faster.finished() == {"best_val_srcc": 0.5}


def test_checkpoint_of_another_run_is_not_loaded(tmp_path):
    run = _folder(tmp_path, StudentTrainConfig())
    run.last_checkpoint.parent.mkdir(parents=True)
    torch.save({"iaa_run_fingerprint": "someone-else"}, run.last_checkpoint)
    assert run.start([], []) is None and not run.last_checkpoint.exists()
    run.last_checkpoint.parent.mkdir()
    run.last_checkpoint.write_bytes(b"torn")
    assert run.start([], []) is None and not run.last_checkpoint.exists()


@pytest.fixture(scope="module")
def csv_head(tmp_path_factory):
    """A teacher head trained on a CSV dataset whose val split was carved with val_fraction=0.2, seed 0."""
    from iaa_distill.data import open_dataset

    root = tmp_path_factory.mktemp("spine")
    features, quality = synthetic_features(100, seed=5)
    lines = ["image,score,split"] + [f"photos/{i}.jpg,{5.5 + 4 * q:.3f},{'test' if i % 5 == 0 else 'train'}"
                                     for i, q in enumerate(quality)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    spec = f"csv:{root / 'labels.csv'}?scale=1,10"
    touch_images(open_dataset(spec))  # val is carved from the found train images
    dataset = open_dataset(spec, val_fraction=0.2, seed=0)
    write_cache(root / "cache", dataset, features[[int(r.image_id.split("/")[1][:-4]) for r in dataset.records]])
    config = TeacherTrainConfig(**{**FAST, "epochs": 2, "hidden": (16, 8)})
    metrics = train_teacher_head(dataset, root / "cache", root / "head", config)
    return root, spec, dataset, config, metrics


def test_finished_teacher_run_is_returned_for_other_execution_settings_and_refused_for_others(csv_head):
    root, _, dataset, config, metrics = csv_head
    again = train_teacher_head(dataset, root / "cache", root / "head", replace(config, device="cpu", progress=True))
    assert again == json.loads(json.dumps(metrics))
    with pytest.raises(IAAError, match="other settings.*train.lr"):
        train_teacher_head(dataset, root / "cache", root / "head", replace(config, lr=0.1))


def test_eval_split_val_reuses_the_saved_ids(csv_head, capsys):
    root, spec, dataset, _, _ = csv_head
    saved = load_split(root / "head")
    assert saved["val"] == [r.image_id for r in dataset.split("val")]
    # other --val-fraction/--seed would carve another val split: the model's split.json wins
    assert main(["eval", str(root / "head"), spec, "--split", "val", "--features", str(root / "cache"),
                 "--out", str(root / "eval"), "--val-fraction", "0.5", "--seed", "3"]) == 0
    per_image = (root / "eval" / "per_image.csv").read_text().splitlines()[1:]
    assert sorted(line.split(",")[0] for line in per_image) == sorted(saved["val"])
    assert json.loads((root / "eval" / "metrics.json").read_text())["n"] == len(saved["val"]) == 16
    np.testing.assert_equal(len(set(saved["train"]) & set(saved["val"])), 0)


def test_lightning_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    import sys

    from iaa_distill.training.spine import build_trainer

    def trainer():
        return build_trainer(tmp_path, {"precision": "32-true", "accelerator": "cpu", "devices": 1, "progress": True},
                             max_epochs=1, patience=1, callbacks=[])

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert trainer().progress_bar_callback is None  # a log file gets no bar (`v_num=0` redrawn in every line)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert trainer().progress_bar_callback is not None
