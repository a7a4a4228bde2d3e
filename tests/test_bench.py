"""`iaa bench`: a smoke run of the decode section writes figures and ratios (speed itself is not asserted)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from iaa_distill.cli import main


def test_bench_decode_section_writes_figures_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--sections", "decode", "--photos", "6", "--repeats", "1", "--workers", "0", "--out", str(out)]) == 0
    document = json.loads((out / "bench.json").read_text())
    names = [r["name"] for r in document["results"]]
    assert any("full decode" in n for n in names) and any("draft" in n for n in names)
    assert all(r["value"] > 0 for r in document["results"])
    assert document["ratios"][0]["name"] == "draft vs full decode, in the main process"
    photo = next((out / "photos").glob("*.jpg"))
    assert 100_000 < photo.stat().st_size < 400_000  # realistic AVA-size JPEGs
    assert "| ratio |" in (out / "bench.md").read_text()


def test_bench_refuses_unknown_sections(capsys):
    assert main(["bench", "--sections", "decode,warp"]) == 1
    assert "unknown bench sections ['warp']" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_culling_section_times_each_stage(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--sections", "culling", "--quick", "--photos", "1", "--workers", "1", "--out", str(out)]) == 0
    document = json.loads((out / "bench.json").read_text())
    variants = ["with MPF preview", "no preview"]  # the same photos as cameras write them, and without
    if len(os.sched_getaffinity(0)) >= 2:  # a core beside the worker: the cull again with the model on that core only
        variants.append("with MPF preview, --threads 1")
        assert any(r["name"].startswith("culling: the model on every core vs --threads 1") for r in document["ratios"])
    for variant in variants:
        shares = {r["name"]: r["value"] for r in document["results"] if r["unit"] == "%" and r["name"].endswith(f"({variant})")}
        assert set(shares) == {f"share of {s} ({variant})" for s in ("scoring", "thumbnails", "decisions", "gallery")}
        assert 90 < sum(shares.values()) <= 100.5
        ratios = [r["name"] for r in document["ratios"]]
        assert f"culling: goal 20 s per 1,000 photos / measured ({variant})" in ratios
        if "--threads" not in variant:  # the stages and iaa score: once per photo variant
            assert any(r.startswith(f"iaa cull, batch 3, {variant}: end to end vs its binding stage") for r in ratios)
            assert any(r.startswith(f"iaa score of camera photos, batch 3, {variant}: end to end") for r in ratios)
    drift = {r["name"]: r["value"] for r in document["results"] if r["name"].startswith("preview vs full decode")}
    assert len(drift) == 2 and all(np.isfinite(list(drift.values())))
    assert next((out / "camera-preview").glob("*.jpg")).stat().st_size > next((out / "camera").glob("*.jpg")).stat().st_size
    assert next((out / "camera").glob("*.jpg")).stat().st_size > 1_000_000  # camera-size JPEGs
    actions = {r["name"].split(" (")[0] for r in document["results"] if r["name"].startswith("action:")}
    assert actions == {"action: xmp sidecars", "action: copy", "action: move"}  # timed apart from the cull
    assert not list((out / "camera").glob("*.xmp")), "the actions act on links, not the benchmark's photos"


def test_bench_cache_section_breaks_the_path_into_stages(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--sections", "cache", "--photos", "4", "--repeats", "1", "--workers", "0", "--out", str(out)]) == 0
    document = json.loads((out / "bench.json").read_text())
    names = [r["name"] for r in document["results"]]
    assert [n.split(":")[0] for n in names if n.startswith("stage")] == ["stage read", "stage grouped resize to 256 on cpu",
                                                                         "stage write"]
    ratios = {r["name"]: r for r in document["ratios"]}
    assert ratios["image cache build vs its decode limit (pil decoder)"]["goal"] == 0.8
    binding = next(r for name, r in ratios.items() if name.startswith("image cache: end to end vs its binding stage"))
    assert binding["value"] > 0 and "stages img/s" in binding["note"]


def test_ava_estimate_shards_features_training_and_scoring_over_devices():
    from iaa_distill.bench.run import AVA_IMAGES, ava_estimate

    rates = {"teachers": {"end_to_end": 1000.0}, "cache": {"end_to_end": 2000.0},
             "training": {"from_files": 5000.0}, "scoring": {"student torch best": 4000.0}}
    estimate = ava_estimate(rates, epochs=15, gpus=8)
    cache_minutes = AVA_IMAGES / 2000.0 / 60
    assert estimate["minutes"][1] > estimate["minutes"][8] > cache_minutes  # the cache is built once, by one rank
    assert abs((estimate["minutes"][1] - cache_minutes) / 8 - (estimate["minutes"][8] - cache_minutes)) < 1e-9


@pytest.mark.slow
def test_bench_prints_the_teacher_scorer_next_to_the_student(tmp_path, capsys):
    from iaa_distill.bench.photos import write_benchmark_photos
    from iaa_distill.bench.teacher_scoring import bench_teacher_scoring
    from iaa_distill.bench.timing import Report

    report = Report({}, show=print)
    photos = write_benchmark_photos(tmp_path / "photos", 2)
    rates = bench_teacher_scoring(report, photos, 0, "cpu", (2,), {"student torch best": 50.0, "nima": 1.0}, onnx=False)
    assert list(rates) == ["torch"] and rates["torch"] == report.results[0].value > 0
    assert report.results[0].name.startswith("teacher scorer (tf_efficientnet_lite0+tf_efficientnet_lite1+")
    ratio = report.ratios[0]
    assert ratio["name"].startswith("student vs teacher scorer") and ratio["value"] == pytest.approx(50.0 / rates["torch"])
    assert "teacher scorer" in capsys.readouterr().out


def test_bench_cli_section_times_help_against_python(capsys):
    from iaa_distill.bench.startup import bench_cli
    from iaa_distill.bench.timing import Report

    report = Report({}, show=print)
    figures = bench_cli(report, repeats=1)
    assert [r.name for r in report.results] == ["python -c pass (interpreter start-up)", "iaa --help",
                                                "iaa score --help"]
    assert all(r.unit == "ms" and r.value > 0 for r in report.results) and figures["iaa --help"] > 0
    ratios = {r["name"]: r for r in report.ratios}
    assert ratios["iaa --help: goal 0.5 s / time"]["goal"] == 1.0
    assert ratios["iaa score --help time / python -c pass time"]["value"] > 0
    assert "iaa --help time / python -c pass time" in capsys.readouterr().out  # shown, not only recorded


def test_help_imports_no_heavy_library():
    import subprocess
    import sys

    for argv in (["--help"], ["score", "--help"], ["serve", "--help"]):
        code = ("import sys; from iaa_distill.cli import main\ntry: main(%r)\nexcept SystemExit: pass\n"
                "print(sorted(m for m in ('torch', 'timm', 'lightning', 'onnxruntime', 'fastapi') if m in sys.modules))"
                % argv)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert run.stdout.strip().splitlines()[-1] == "[]", argv


def test_a_path_faster_than_its_slowest_stage_is_a_measurement_error_not_a_result():
    from iaa_distill.bench.stages import binding_stage
    from iaa_distill.bench.timing import Report

    report = Report({})
    binding_stage(report, "scoring", {"read": 50.0, "compute": 20.0}, 43.0, 0.8)  # batch 8 end to end vs batch 32 stages
    binding_stage(report, "scoring", {"read": 50.0, "compute": 20.0}, 18.0, 0.8)
    impossible, honest = report.ratios
    assert impossible["value"] == pytest.approx(2.15) and "MEASUREMENT ERROR" in impossible["verdict"]
    assert impossible["goal"] is None and honest["verdict"] == "met"


def test_scoring_stages_print_the_binding_stage_and_the_shared_core_limit(tmp_path):
    from iaa_distill.bench.photos import write_benchmark_photos
    from iaa_distill.bench.sections import _scoring_stages
    from iaa_distill.bench.timing import Report
    from iaa_distill.scoring import Scorer
    from tests.conftest import save_tiny_student

    scorer = Scorer.from_pretrained(save_tiny_student(tmp_path / "model"), device="cpu", backend="torch")
    report = Report({}, show=lambda line: None)
    _scoring_stages(report, "tiny", scorer, write_benchmark_photos(tmp_path / "photos", 2), 0, 2, 1.0)
    rates = [r.value for r in report.results]  # read, resize, compute
    binding, shared = report.ratios
    assert binding["name"].startswith("iaa score, tiny, batch 2: end to end vs its binding stage")
    assert binding["value"] == pytest.approx(1.0 / min(rates)) and binding["goal"] == 0.8
    assert shared["name"].startswith("iaa score, tiny, batch 2: end to end vs 1 / (1/read + 1/resize + 1/compute)")
    assert shared["value"] == pytest.approx(sum(1 / r for r in rates))  # 1.0 / (1 / sum(1/r))


def test_scoring_prints_one_model_thread_against_the_default_threads(tmp_path):
    import torch

    from iaa_distill.bench.photos import write_benchmark_photos
    from iaa_distill.bench.sections import _one_thread
    from iaa_distill.bench.timing import Report
    from iaa_distill.scoring.onnx_export import export_onnx
    from tests.conftest import save_tiny_student

    model_dir = save_tiny_student(tmp_path / "model")
    report = Report({}, show=lambda line: None)
    threads = torch.get_num_threads()
    rates = _one_thread(report, model_dir, export_onnx(model_dir, tmp_path / "model.onnx"),
                        write_benchmark_photos(tmp_path / "photos", 2), 0, 2, 1.0)
    (ratio,) = report.ratios
    assert ratio["name"].startswith("iaa score --threads 1 vs its default threads")
    assert rates["student onnxruntime --threads 1"] > 0
    assert ratio["value"] == pytest.approx(rates["student onnxruntime --threads 1"])  # against 1.0
    assert torch.get_num_threads() == threads  # NIMA, timed next, keeps every core


def test_bench_int8_reports_its_rank_loss_on_bench_photos_held_out_from_calibration(tmp_path, sample_photos):
    from iaa_distill.bench.sections import _int8_scorer
    from iaa_distill.bench.timing import Report
    from tests.conftest import save_tiny_student, write_jpegs

    write_jpegs(tmp_path / "photos", sample_photos, 9, size=96)
    report = Report({}, show=print)
    scorer = _int8_scorer(report, save_tiny_student(tmp_path / "student"), sorted((tmp_path / "photos").iterdir()),
                          tmp_path, 0)
    rows = {r.name: r.value for r in report.results}
    assert any("fp32's ranking (3 held-out bench photos" in name for name in rows)  # 9 photos: 6 calibrate
    assert all(r.ok for r in scorer.score(sorted((tmp_path / "photos").iterdir())))


def test_bench_int8_times_what_the_export_saves_and_says_when_it_refused(tmp_path, sample_photos, monkeypatch):
    import iaa_distill.scoring.quantize as quantize
    from iaa_distill.bench.sections import _int8_scorer
    from iaa_distill.bench.timing import Report
    from tests.conftest import save_tiny_student, write_jpegs

    write_jpegs(tmp_path / "photos", sample_photos, 9, size=96)
    photos, student = sorted((tmp_path / "photos").iterdir()), save_tiny_student(tmp_path / "student")
    real, losses = quantize.measure_drift, []

    def measure(*args, **kwargs):  # the schemes lose losses[0], losses[1], ... of fp32's ranking, then 0.2
        return quantize.Drift(**{**real(*args, **kwargs).__dict__, "rank_loss": losses.pop(0) if losses else 0.2})

    monkeypatch.setattr(quantize, "measure_drift", measure)
    for drifts, timed in ([0.2, 0.0], "what --int8 saves"), ([], "--int8 refused every scheme; the fastest"):
        losses[:] = drifts
        report = Report({}, show=print)
        _int8_scorer(report, student, photos, tmp_path, 0)
        name = report.results[0].name
        assert name.startswith(f"int8 timed below ({timed}: ")
        assert (" and blocks." in name) == (timed == "what --int8 saves")  # the rule's choice, a block kept fp32
