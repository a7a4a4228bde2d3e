"""Feature cache: roundtrip, refusal of mismatched caches, bad images, kill -9 resume, 2-process sharding."""
from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_distill.cli import main
from iaa_distill.data.records import Dataset, ImageRecord
from iaa_distill.errors import IAAError
from iaa_distill.features import ExtractionSettings, FeatureCache, extract_features
from iaa_distill.inputs import BatchReader
from iaa_distill.storage import read_progress
from iaa_distill.imaging import decode_image
from iaa_distill.teachers import PackedInputs, load_teachers
from tests.conftest import write_jpegs
from tests.test_teachers import write_tiny_weights

TEACHER = "test_efficientnet"
NUM_GOOD = 11


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_photos) -> tuple[Dataset, dict[str, str]]:
    """A folder of 11 small JPEGs + one corrupt file, and a weights file for the tiny teacher."""
    root = tmp_path_factory.mktemp("features")
    paths = write_jpegs(root / "images", sample_photos, NUM_GOOD, size=64)
    bad = root / "images" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    paths.insert(5, bad)
    records = [ImageRecord(p.stem, p, "tiny", split="train" if i % 4 else "test") for i, p in enumerate(paths)]
    weights = {TEACHER: str(write_tiny_weights(root))}
    return Dataset("tiny", root / "images", records), weights


def _extract(dataset: Dataset, weights: dict[str, str], out: Path, **kwargs) -> FeatureCache:
    options = {"batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False, **kwargs}
    return extract_features(dataset, out, ExtractionSettings((TEACHER,), weights=weights, **options))


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> FeatureCache:
    dataset, weights = setup
    return _extract(dataset, weights, tmp_path_factory.mktemp("reference") / "cache")


def test_cache_roundtrip(setup, reference):
    dataset, weights = setup
    cache = FeatureCache.open(reference.directory)
    assert cache.ids == [r.image_id for r in dataset.records]
    assert cache.features.dtype == np.float16 and cache.features.shape == (12, cache.dim)
    assert not cache.features.flags.writeable
    assert cache.done.all() and cache.complete
    assert cache.manifest["complete"] and cache.manifest["dataset"]["fingerprint"] == dataset.fingerprint()
    spec = cache.manifest["teachers"][0]
    assert spec["name"] == TEACHER and sum(spec["level_dims"]) == cache.dim == spec["dim"]
    assert cache.manifest["preprocessing"]["decoder"] == "pil"
    # the cached rows are the teacher's features of each decoded image (batched differently here)
    teachers = load_teachers([TEACHER], weights)
    transform = PackedInputs([t.input_size for t in teachers.teachers], [t.interpolation for t in teachers.teachers])
    ids = ["00000", "00007"]
    images = torch.stack([transform(decode_image(dataset.root / f"{i}.jpg", min_side=160)) for i in ids])
    expected = teachers(images).numpy()
    assert np.allclose(cache.features_for(ids), expected, rtol=2e-3, atol=2e-3)
    assert cache.features_for(ids).dtype == np.float32
    assert cache.rows_for(ids).tolist() == [cache.ids.index(i) for i in ids]  # rows_for: rows, as in every cache
    assert np.abs(expected).max() > 0.01


def test_bad_images_are_listed_and_excluded(reference):
    cache = reference
    assert list(cache.failed) == ["broken"] and "broken.jpg" in cache.failed["broken"]
    assert cache.manifest["failed"] == cache.failed
    assert "broken" not in cache.valid_ids() and len(cache.valid_ids()) == NUM_GOOD
    assert not cache.features[cache.ids.index("broken")].any()
    with pytest.raises(IAAError, match="broken"):
        cache.rows_for(["broken"])
    with pytest.raises(IAAError, match="'nope'"):
        cache.rows_for(["00000", "nope"])


def test_rerun_is_a_no_op_and_mismatches_are_refused(setup, reference, tmp_path):
    dataset, weights = setup
    before = (reference.directory / "features.npy").read_bytes()
    _extract(dataset, weights, reference.directory)
    assert (reference.directory / "features.npy").read_bytes() == before
    with pytest.raises(IAAError, match="hflip"):
        _extract(dataset, weights, reference.directory, hflip=True)
    other_weights = {TEACHER: str(write_tiny_weights(tmp_path, seed=1))}
    with pytest.raises(IAAError, match="weights.*another --out"):
        _extract(dataset, other_weights, reference.directory)
    with pytest.raises(IAAError, match="dataset split all vs train"):
        _extract(dataset, weights, reference.directory, split="train")
    other = Dataset("other", dataset.root, dataset.records[:6])
    with pytest.raises(IAAError, match="made for dataset 'tiny'.*not for 'other'"):
        reference.check_matches(other)
    reference.check_matches(dataset)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(IAAError, match="not a feature cache"):
        _extract(dataset, weights, tmp_path)
    with pytest.raises(IAAError, match="not a feature cache"):
        FeatureCache.open(tmp_path)


def test_split_cache_holds_only_that_split(setup, tmp_path):
    dataset, weights = setup
    cache = _extract(dataset, weights, tmp_path / "train", split="train")
    assert cache.ids == [r.image_id for r in dataset.split("train")]
    assert cache.manifest["dataset"]["split"] == "train"



def test_one_id_hash_and_caches_with_the_old_one_get_a_rebuild_line(setup, reference, tmp_path):
    import shutil

    from iaa_distill.data.records import ids_hash

    dataset, weights = setup
    assert reference.manifest["dataset"]["ids_hash"] == ids_hash(reference.ids) == dataset.fingerprint()
    old = tmp_path / "old"
    shutil.copytree(reference.directory, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["dataset"]["ids_sha256"] = manifest["dataset"].pop("ids_hash")  # as written before the one hash
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert FeatureCache.open(old).features_for(["00000"]).shape == (1, reference.dim)  # still opens for reading
    with pytest.raises(IAAError, match=r"older iaa-distill .*rebuild it: delete the folder and rerun `iaa features`"):
        _extract(dataset, weights, old)

SLOW_EXTRACTION = textwrap.dedent("""
    import pickle, sys, time
    from iaa_distill.teachers.mlsp import Teacher
    forward = Teacher.forward
    def slow_forward(self, images):
        time.sleep(0.4)
        return forward(self, images)
    Teacher.forward = slow_forward
    from iaa_distill.features import ExtractionSettings, extract_features
    dataset, weights = pickle.loads(open(sys.argv[1], "rb").read())
    extract_features(dataset, sys.argv[2], ExtractionSettings(("test_efficientnet",), weights=weights, batch_size=2,
                                                              num_workers=0, device="cpu", progress=False))
""")


def test_kill_9_then_resume_equals_uninterrupted_run(setup, tmp_path):
    dataset, weights = setup
    clean = _extract(dataset, weights, tmp_path / "clean", batch_size=2)
    (tmp_path / "job.pkl").write_bytes(pickle.dumps((dataset, weights)))
    out = tmp_path / "killed"
    log = out / "progress" / "rank0.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXTRACTION, str(tmp_path / "job.pkl"), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and log.read_bytes().count(b"\n") >= 2):
            assert proc.poll() is None, "extraction ended before it could be killed"
            assert time.monotonic() < deadline, "no progress logged within 120 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done, _ = read_progress(out, 12)
    assert 4 <= done.sum() < 12  # really interrupted in the middle
    with open(log, "ab") as f:  # as if killed while appending a line
        f.write(b'{"rows": [10, 11], "fai')
    resumed = _extract(dataset, weights, out, batch_size=2)
    assert (out / "features.npy").read_bytes() == (clean.directory / "features.npy").read_bytes()
    assert resumed.failed == clean.failed and resumed.complete
    assert json.loads((out / "ids.json").read_text()) == clean.ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, dataset: Dataset, weights: dict[str, str], out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _extract(dataset, weights, Path(out), batch_size=2)


def test_two_process_gloo_sharding_equals_single_process(setup, reference, tmp_path):
    dataset, weights = setup
    out = tmp_path / "ddp"
    torch.multiprocessing.spawn(_rank_main, args=(2, _free_port(), dataset, weights, str(out)), nprocs=2)
    sharded = FeatureCache.open(out)
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["rank0.log", "rank1.log"]
    assert sharded.ids == reference.ids and sharded.failed == reference.failed and sharded.complete
    assert sharded.manifest["complete"]
    assert np.allclose(np.asarray(sharded.features, np.float32), np.asarray(reference.features, np.float32),
                       rtol=1e-3, atol=1e-3)


def test_batch_reader_passes_plain_jpegs_and_decodes_the_rest(setup, sample_photos, tmp_path):
    """Workers of the device-decode path: bytes of complete plain JPEGs; everything else decoded or reported."""
    dataset, _ = setup
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(sample_photos["chelsea"]).resize((60, 40)).save(rotated, exif=exif)
    png = tmp_path / "photo.png"
    Image.fromarray(sample_photos["coffee"]).resize((60, 40)).save(png)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((dataset.root / "00001.jpg").read_bytes()[:-200])
    paths = [str(dataset.root / "00000.jpg"), str(rotated), str(png), str(dataset.root / "broken.jpg"), str(truncated)]
    raw = BatchReader(paths, [[0, 1, 2, 3, 4]], min_side=32, encoded=True)[0]
    assert raw.jpeg_rows.tolist() == [0] and raw.jpeg_sizes.tolist() == [len(Path(paths[0]).read_bytes())]
    assert bytes(raw.jpegs[:2].numpy()) == b"\xff\xd8"
    shapes = dict(zip(raw.rows.tolist(), map(tuple, raw.shapes.tolist())))
    assert shapes == {1: (60, 40), 2: (40, 60)}  # EXIF rotation applied to the rotated JPEG
    assert raw.pixels.numel() == 2 * 60 * 40 * 3 and raw.pixels.dtype == torch.uint8  # one buffer for both
    errors = dict(raw.errors)
    assert sorted(errors) == [3, 4] and "broken.jpg" in errors[3]
    assert "truncated.jpg" in errors[4]  # never half a photo


def test_batch_decode_path_matches_the_pil_path(setup, reference, sample_photos, tmp_path, monkeypatch):
    """decoder='torchvision' (the nvJPEG path on CUDA) run on the CPU: same rows, same failures, and the same
    features within 1e-3: on the CPU both decoders are libjpeg and both paths share one batched resize, so
    they cannot drift. Only nvJPEG itself and bfloat16 need a GPU."""
    import torchvision.io

    dataset, weights = setup
    calls = []
    real_decode = torchvision.io.decode_jpeg
    monkeypatch.setattr(torchvision.io, "decode_jpeg", lambda files, **kw: calls.append(len(files)) or real_decode(files, **kw))
    cache = _extract(dataset, weights, tmp_path / "tv", decoder="torchvision")
    assert sum(calls) == NUM_GOOD and max(calls) > 1  # the good JPEGs really went through the batch decoder
    assert cache.manifest["preprocessing"]["decoder"] == "torchvision+pil"
    assert cache.ids == reference.ids and cache.failed == reference.failed and cache.complete
    ours, theirs = cache.features_for(cache.valid_ids()), reference.features_for(reference.valid_ids())
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    with pytest.raises(IAAError, match="decoder"):  # a cache is not resumed with another decoder
        _extract(dataset, weights, tmp_path / "tv", decoder="pil")


def test_cli_features(setup, tmp_path, capsys):
    dataset, weights = setup
    out = tmp_path / "cli"
    argv = ["features", f"folder:{dataset.root}", "--teachers", TEACHER, "--out", str(out),
            "--weights", f"{TEACHER}={weights[TEACHER]}", "--workers", "1", "--device", "cpu", "--batch-size", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{NUM_GOOD} of 12 images" in printed and "skipped broken.jpg" in printed
    assert FeatureCache.open(out).manifest["dataset"]["num_images"] == 12
    assert main(argv + ["--hflip"]) == 1
    assert "use another --out" in capsys.readouterr().err
    assert main(argv + ["--weights", "oops"]) == 1
    assert "NAME=PATH" in capsys.readouterr().err
