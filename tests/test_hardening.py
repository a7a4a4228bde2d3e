"""Issue 13: the command line and the Scorer fail early and in one line, never hang, never overwrite silently,
and give one image the same score whatever form it comes in."""
from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_distill.cli import main
from iaa_distill.errors import DecodeError, IAAError
from iaa_distill.imaging import decode_image
from iaa_distill.scoring import Scorer
from iaa_distill.scoring.paths import collect_inputs
from tests.conftest import write_jpegs
from tests.test_score_cli import REPO, score

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, sample_photos) -> Path:
    root = tmp_path_factory.mktemp("hardening")
    write_jpegs(root / "shoot", sample_photos, 3, size=80)
    return root / "shoot"


@pytest.fixture
def immutable(tmp_path):
    """chattr +i on a path (undone afterwards); skips where the file system does not support it."""
    marked = []

    def mark(path: Path) -> Path:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("chattr +i is not supported here")
        marked.append(path)
        return path

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("iaa: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# -- outputs -------------------------------------------------------------------------------------
def test_an_existing_output_is_refused_unless_resume_or_overwrite(model_dir, photo_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    out.write_text("precious\n")
    assert score(photo_dir, "--model", model_dir, "--out", out) == 1
    assert "already exists" in _one_error_line(capsys) and out.read_text() == "precious\n"
    assert score(photo_dir, "--model", model_dir, "--out", out, "--overwrite") == 0
    assert len(out.read_text().splitlines()) == 4
    assert "scored 3 images, 0 failed" in capsys.readouterr().err


def test_unwritable_outputs_fail_before_scoring_in_one_line(model_dir, photo_dir, tmp_path, capsys, immutable):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "locked").mkdir()
    locked_dir = immutable(tmp_path / "locked")
    locked_file = tmp_path / "locked-file.csv"
    locked_file.write_text("path,mean\n")
    immutable(locked_file)
    cases = {
        tmp_path / "a-file" / "scores.csv": "is a file, not a folder",
        tmp_path / "a-folder": "is a folder",
        locked_dir / "scores.csv": "cannot write here",
    }
    for out, message in cases.items():
        assert score(photo_dir, "--model", model_dir, "--out", out) == 1, out
        assert message in _one_error_line(capsys)
    assert score(photo_dir, "--model", model_dir, "--out", locked_file, "--overwrite") == 1
    assert "cannot write here" in _one_error_line(capsys)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.partial"))


def test_os_errors_anywhere_in_the_cli_are_one_line(monkeypatch, capsys):
    from iaa_distill.cli import bench

    def fail(_):
        raise PermissionError(13, "Permission denied", "/somewhere/bench.json")

    monkeypatch.setattr(bench, "run", fail)
    assert main(["bench"]) == 1
    assert "/somewhere/bench.json: Permission denied" in _one_error_line(capsys)


# -- inputs --------------------------------------------------------------------------------------
def test_fifos_are_skipped_and_reported_not_read(model_dir, photo_dir, tmp_path, capsys):
    folder = tmp_path / "with-fifo"
    folder.mkdir()
    (folder / "real.jpg").write_bytes((photo_dir / "00000.jpg").read_bytes())
    os.mkfifo(folder / "pipe.jpg")
    inputs = collect_inputs([str(folder)])
    assert inputs.paths == [str(folder / "real.jpg")]
    assert inputs.skipped == [f"{folder / 'pipe.jpg'}: not a regular file, skipped"]
    signal.alarm(120)  # reading the FIFO would block forever
    try:
        assert score(folder, "--model", model_dir, "--out", tmp_path / "s.csv") == 0
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert "pipe.jpg: not a regular file, skipped" in err and "scored 1 image, 0 failed" in err


def test_symlink_loops_are_not_followed_and_files_are_listed_once(photo_dir, tmp_path):
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes((photo_dir / "00000.jpg").read_bytes())
    os.symlink("..", root / "a" / "up")  # two loops: glob.glob would list x.jpg 2^40 times
    os.symlink("../a", root / "a" / "again")
    os.symlink("x.jpg", root / "a" / "same.jpg")
    for spec in (f"{root}/**/*.jpg", str(root), f"folder:{root}"):
        paths = collect_inputs([spec]).paths
        assert [os.path.realpath(p) for p in paths] == [os.path.realpath(root / "a" / "x.jpg")], spec
    with pytest.raises(IAAError, match="not a folder"):
        collect_inputs([f"folder:{root / 'a' / 'x.jpg'}"])


def test_folder_spec_scores(model_dir, photo_dir, tmp_path):
    assert score(f"folder:{photo_dir}", "--model", model_dir, "--out", tmp_path / "s.csv") == 0
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 4


# -- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["serve", "--model", "m", "--port", "70000"], "is not a port number"),
    (["serve", "--model", "m", "--max-upload-mb", "0"], "is not a number > 0"),
    (["score", "x.jpg", "--model", "m", "--workers", "-1"], "is not an integer >= 0"),
    (["score", "x.jpg", "--model", "m", "--batch-size", "zero"], "is not an integer >= 1"),
    (["data", "check", "csv:x.csv", "--val-fraction", "1.5"], "is not a fraction in [0, 1]"),
    (["compare", "a", "--out", "o", "--bootstrap", "0"], "is not an integer >= 1"),
])
def test_numeric_options_are_checked_at_parse_time(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_every_option_has_help_and_workers_is_spelled_once():
    from iaa_distill.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            for sub in (getattr(action, "choices", None) or {}).values() if action.nargs == "A..." else ():
                yield from parsers(sub)

    owned = ("score", "serve", "export", "eval", "compare", "data", "demo", "bench")  # training commands: engineer A
    for parser in parsers(build_parser()):
        if parser.prog != "iaa" and parser.prog.split()[1] not in owned:
            continue
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{parser.prog} {action.option_strings}"
                assert "--num-workers" not in action.option_strings, parser.prog


def test_help_names_every_dataset_format_and_the_teacher_folder(capsys):
    from iaa_distill.data.registry import READERS

    with pytest.raises(SystemExit):
        main(["data", "--help"])
    described = " ".join(capsys.readouterr().out.split())
    assert described.split("FORMAT:PATH (")[1].split(")")[0].split(", ") == list(READERS), described
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = " ".join(capsys.readouterr().out.split())
    assert "export a trained student or teacher folder" in commands
    assert "web page for a trained student or teacher folder" in commands


def test_eval_takes_model_as_an_option(capsys):
    assert main(["eval", "--model", "m1", "m2", "csv:x.csv", "--out", "o"]) == 1
    assert "name the model once" in _one_error_line(capsys)


def test_lightning_banners_and_tips_are_quiet():
    code = ("import torch; from iaa_distill.cli import quiet_libraries; quiet_libraries()\n"
            "import lightning.pytorch as pl\n"
            "pl.Trainer(accelerator='cpu', logger=False, enable_checkpointing=False, enable_progress_bar=False)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert run.returncode == 0, run.stderr
    assert "GPU available" not in run.stdout + run.stderr and "Tip" not in run.stdout + run.stderr
    assert logging.getLogger("lightning.pytorch.utilities.rank_zero").level in (0, logging.WARNING)


def test_torch_floor_allows_safe_checkpoint_loading():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(d for d in deps if d.startswith("torch>=")).split(">=")[1].split(",")[0]
    assert tuple(int(p) for p in floor.split(".")) >= (2, 6)


# -- pixel limit and formats ---------------------------------------------------------------------
def test_max_pixels_option_and_the_configured_limit_in_messages(model_dir, photo_dir, tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    assert score(photo_dir, "--model", model_dir, "--out", out, "--max-pixels", "1000") == 1  # none scored
    assert out.read_text().count("exceeds the limit of 1,000 pixels") == 3
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own guard fires above twice this
    with pytest.raises(DecodeError) as info:
        decode_image((photo_dir / "00000.jpg").read_bytes(), max_pixels=500, name="big.jpg")
    assert "limit of 500 pixels" in str(info.value) and "2000" not in str(info.value)


def test_eps_is_refused_by_the_decoder():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n"
    with pytest.raises(DecodeError, match="not a recognised image"):
        decode_image(eps, name="drawing.jpg")


# -- Scorer --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scorer(model_dir) -> Scorer:
    return Scorer.from_pretrained(model_dir, device="cpu")


def test_same_score_whatever_the_input_type(scorer, sample_photos, tmp_path):
    image = Image.fromarray(sample_photos["chelsea"]).resize((160, 120))  # larger than the input: a real resize
    path = tmp_path / "cat.png"
    image.save(path)
    array = np.array(image)
    chw = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    inputs = [path, path.read_bytes(), io.BytesIO(path.read_bytes()), image, array, chw,
              array.astype(np.float32) / 255, chw.float() / 255]
    results = scorer.score(inputs)
    assert [r.error for r in results] == [""] * len(inputs)
    np.testing.assert_allclose([r.mean for r in results], results[0].mean, atol=1e-5)
    with path.open("rb") as f:
        named = scorer.score(f)
    assert named.path == str(path) and named.mean == pytest.approx(results[0].mean, abs=1e-5)


def test_unknown_inputs_raise_type_error_and_bad_floats_are_reported(scorer):
    for bad in (None, 42, [None]):
        with pytest.raises(TypeError, match="cannot score"):
            scorer.score(bad)
    (result,) = scorer.score([np.full((8, 8, 3), 2.0)])
    assert "[0, 1]" in result.error


def test_scorer_repr_names_model_scale_device_and_backend(scorer, model_dir):
    text = repr(scorer)
    for part in (Path(model_dir).name, scorer.config.backbone, "(1.0, 10.0)", "cpu", scorer.backend.name):
        assert part in text, text


# -- label files and model folders ---------------------------------------------------------------
@pytest.mark.parametrize("bad_row", [
    'b.jpg,"5\n' + "c.jpg,6\n" * 20_000,  # an unterminated quote swallows the rest of the file
    "b.jpg," + "9" * 140_000 + "\n",  # a field over the csv module's 128 KB limit
], ids=["unterminated-quote", "huge-field"])
def test_malformed_csv_is_one_line_with_file_and_line(tmp_path, bad_row, capsys):
    from iaa_distill.data.koniq import read_koniq
    from iaa_distill.data.tad66k import read_tad66k
    from iaa_distill.errors import DatasetError

    labels = tmp_path / "labels.csv"
    labels.write_text("image,score\na.jpg,7\n" + bad_row)
    assert main(["data", "check", f"csv:{labels}"]) == 1
    assert "labels.csv:3: malformed CSV" in _one_error_line(capsys)
    (tmp_path / "merge").mkdir()
    for name in ("train.csv", "test.csv"):
        (tmp_path / "merge" / name).write_text("image,score\na.jpg,7\n" + bad_row)
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,c1,c2,c3,c4,c5\na.jpg,1,2,3,4,5\n" + bad_row)
    for reader in (read_tad66k, read_koniq):
        with pytest.raises(DatasetError, match=r"\.csv:3: malformed CSV"):
            reader(tmp_path)


def _copy_model(model_dir: Path, to: Path) -> Path:
    to.mkdir()
    for item in Path(model_dir).iterdir():
        if item.is_file():  # not the ONNX export cached beside it
            (to / item.name).write_bytes(item.read_bytes())
    return to


@pytest.mark.parametrize("damage, message", [
    ("truncate", "model.safetensors: damaged or truncated weights"),
    ("levels", "config.json: does not match model.safetensors"),
    ("backbone", "config.json: cannot build the model"),
])
def test_damaged_model_folders_name_the_file(model_dir, photo_dir, tmp_path, damage, message, capsys):
    import json

    broken = _copy_model(model_dir, tmp_path / "broken")
    weights, config_path = broken / "model.safetensors", broken / "config.json"
    config = json.loads(config_path.read_text())
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        config.update(num_levels=5) if damage == "levels" else config.update(backbone="no_such_backbone_v9")
        config_path.write_text(json.dumps(config))
    assert score(photo_dir, "--model", broken, "--out", tmp_path / "s.csv") == 1
    assert message in _one_error_line(capsys)


def test_a_model_trained_on_synthetic_labels_says_so_in_the_summary_and_gallery(model_dir, photo_dir, tmp_path, capsys):
    import json

    synthetic = _copy_model(model_dir, tmp_path / "demo-model")
    config = json.loads((synthetic / "config.json").read_text())
    (synthetic / "config.json").write_text(json.dumps({**config, "synthetic_labels": True}))
    gallery = tmp_path / "gallery.html"
    assert score(photo_dir, "--model", synthetic, "--out", tmp_path / "s.csv", "--html", gallery) == 0
    assert "SYNTHETIC labels" in capsys.readouterr().err and "SYNTHETIC labels" in gallery.read_text()


def test_readme_says_what_was_measured_how_to_install_and_how_to_cite():
    readme = (REPO / "README.md").read_text()
    assert "is reproduced with" not in readme and "has **not** run AVA" in readme
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in readme
    assert "5.5 GB" in readme and "torch>=2.6" in readme
    assert "@article{hou2022distilling" in readme and "2206.00809" in readme
    assert "## Robustness" in readme and "--overwrite" in readme and "FIFO" in readme
