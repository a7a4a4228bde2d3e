"""`iaa eval` (student through the Scorer, teacher head on a feature cache) and `iaa compare` end to end."""
import json

import numpy as np
import pytest
import torch

from iaa_distill.cli import main
from iaa_distill.evaluation import Predictions, evaluate_model, load_run, write_report
from tests.conftest import write_jpegs


def test_compare_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    true = rng.uniform(3, 8, 200)
    for name, noise in (("base", 1.0), ("distilled", 0.4)):
        write_report(Predictions([str(i) for i in range(200)], true, true + rng.normal(0, noise, 200),
                                 categories=[("tag:Sky",)] * 200, scale=(1, 10), model_name=name), tmp_path / name)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "distilled"), "--out", str(out),
                 "--bootstrap", "200", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "distilled vs base: SRCC +" in printed and "p=" in printed and str(out / "comparison.md") in printed
    assert json.loads((out / "comparison.json").read_text())["seed"] == 1

    write_report(Predictions([str(i) for i in range(150)], true[:150], true[:150], scale=(1, 10)), tmp_path / "other")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "other"), "--out", str(out)]) == 1
    assert "iaa: error:" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "nothing"), "--out", str(out)]) == 1
    assert "not an evaluation folder" in capsys.readouterr().err


def _votes_csv(folder, names, rng):
    lines = ["image," + ",".join(f"votes_{k}" for k in range(1, 11)) + ",split,category"]
    for i, name in enumerate(names):
        votes = rng.integers(0, 30, 10)
        lines.append(f"images/{name}," + ",".join(map(str, votes)) + f",{'test' if i % 2 else 'train'},"
                     + ("animal;outdoor" if i % 3 else "portrait"))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return f"csv:{folder / 'labels.csv'}"


def test_eval_student(tmp_path, capsys, sample_photos):
    pytest.importorskip("iaa_distill.scoring")
    pytest.importorskip("iaa_distill.data.registry")
    from iaa_distill.data.registry import open_dataset
    from iaa_distill.preprocessing import load_image_tensor
    from iaa_distill.student import Student, StudentConfig

    paths = write_jpegs(tmp_path / "data" / "images", sample_photos, 16, size=64)
    (tmp_path / "data" / "images" / "00003.jpg").write_bytes(b"not a jpeg")  # a test image that cannot be decoded
    spec = _votes_csv(tmp_path / "data", [p.name for p in paths], np.random.default_rng(1))
    torch.manual_seed(0)
    model = Student(StudentConfig(backbone="test_efficientnet", feature_dim=16, input_size=64, train_resize=72))
    model.save_pretrained(tmp_path / "student")

    out = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "student"), spec, "--out", str(out), "--workers", "0", "--batch-size", "3",
                 "--min-category-images", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "SRCC" in printed and "excluded 1 image" in printed and str(out / "report.html") in printed

    run = load_run(out)
    test_ids = [r.image_id for r in open_dataset(spec).split("test")]
    assert run.predictions.ids == [i for i in test_ids if i != "images/00003.jpg"]
    assert "00003.jpg" in run.document["excluded"]["images/00003.jpg"]
    assert run.document["model_kind"] == "student" and run.document["n"] == 7
    model = Student.from_pretrained(tmp_path / "student")
    with torch.no_grad():
        images = torch.stack([load_image_tensor(tmp_path / "data" / i, 64) for i in run.predictions.ids])
        mean, dist = model.predict(images)
    np.testing.assert_allclose(run.predictions.pred_mean, mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(run.predictions.pred_dist, dist.numpy(), atol=1e-5)
    assert "emd_r1" in run.document["overall"]
    assert {c["category"] for c in run.document["per_category"]} == {"category:animal", "category:outdoor",
                                                                     "category:portrait"}


def test_eval_teacher_head_on_feature_cache(tmp_path, capsys):
    pytest.importorskip("iaa_distill.teacher_head")
    helpers = pytest.importorskip("tests.test_teacher_head")
    from iaa_distill.data.registry import open_dataset
    from iaa_distill.features import FeatureCache
    from iaa_distill.teacher_head import TeacherHead, TeacherHeadConfig, predict_features

    features, quality = helpers.synthetic_features(60, seed=1)
    lines = ["image,score,split"] + [f"p/{i}.jpg,{5.5 + 4 * q:.3f},{'test' if i % 3 == 0 else 'train'}"
                                     for i, q in enumerate(quality)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    spec = f"csv:{tmp_path / 'labels.csv'}?scale=1,10"
    dataset = open_dataset(spec)
    order = [int(r.image_id.split("/")[1][:-4]) for r in dataset.records]
    failed_row = next(row for row, r in enumerate(dataset.records) if r.split == "test")
    cache = helpers.write_cache(tmp_path / "cache", dataset, features[order], failed={failed_row: "broken file"})
    torch.manual_seed(0)
    head = TeacherHead(TeacherHeadConfig(input_dim=helpers.DIM, num_levels=None, scale=(1.0, 10.0), hidden=(16, 8),
                                         teachers=cache.manifest["teachers"]))
    head.save_pretrained(tmp_path / "head")

    assert main(["eval", str(tmp_path / "head"), spec, "--out", str(tmp_path / "eval")]) == 1
    assert "--features" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "head"), spec, "--features", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "eval")]) == 0
    run = load_run(tmp_path / "eval")
    failed_id = dataset.records[failed_row].image_id
    expected_ids = [r.image_id for r in dataset.split("test") if r.image_id != failed_id]
    assert run.predictions.ids == expected_ids and run.document["excluded"] == {failed_id: "broken file"}
    mean, dist = predict_features(TeacherHead.from_pretrained(tmp_path / "head"),
                                  FeatureCache.open(tmp_path / "cache").features_for(expected_ids))
    np.testing.assert_allclose(run.predictions.pred_mean, mean, rtol=1e-6)
    assert dist is None and run.predictions.pred_dist is None
    assert run.document["model_kind"] == "teacher_head" and run.document["teachers"] == ["synthetic_teacher"]

    other = TeacherHead(TeacherHeadConfig(input_dim=helpers.DIM, num_levels=None, scale=(1.0, 10.0),
                                          hidden=(16, 8), teachers=[{"name": "resnet50"}]))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(Exception, match="trained on 'resnet50'"):
        evaluate_model(tmp_path / "other", dataset, features=tmp_path / "cache")
