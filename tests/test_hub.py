"""Hub names: `iaa push` publishes a model folder with its card through huggingface_hub's own client, a hub name
downloads once into huggingface_hub's own cache layout, and from then on loads with the network off. The Hub is
a local stand-in (tests/fake_hub.py); nothing reaches the internet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iaa_distill.errors import IAAError
from iaa_distill.scoring import Scorer
from iaa_distill.scoring.hub import is_hub_name, model_card, resolve_model
from tests.conftest import save_tiny_student
from tests.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[1]
RESOLVE = "import sys; from iaa_distill.scoring.hub import resolve_model; print(resolve_model(sys.argv[1]))"
PUSH_THEN_RESOLVE = ("import sys; from iaa_distill.cli import main; code = main(['push', *sys.argv[1:]])\n"
                     "if code: sys.exit(code)\n"
                     "from iaa_distill.scoring.hub import resolve_model; print(resolve_model(sys.argv[2]))")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_push_download_then_load_offline_byte_identical(tmp_path, photos, monkeypatch):
    model_dir = save_tiny_student(tmp_path / "student")
    cache = tmp_path / "hf-cache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_TOKEN": "hf_test", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    with FakeHub() as url:
        env["HF_ENDPOINT"] = url
        fetched = _run(["-c", PUSH_THEN_RESOLVE, str(model_dir), "org/tiny"], env)  # one process: one start-up
        assert fetched.returncode == 0, fetched.stderr
        commit = fetched.stderr.split("(commit ")[1].split(")")[0]
    snapshot = Path(fetched.stdout.strip())
    assert snapshot == cache / "models--org--tiny" / "snapshots" / commit  # huggingface_hub's own layout
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == commit
    for name in ("README.md", "config.json", "model.safetensors"):
        assert (snapshot / name).read_bytes() == (model_dir / name).read_bytes(), name
    card = (snapshot / "README.md").read_text()
    assert "library_name: iaa-distill" in card and "## Training data" in card and "## Metrics" in card

    # the Hub is gone: the cache answers, with or without HF_HUB_OFFLINE, at a pinned revision or main
    again = _run(["-c", RESOLVE, "org/tiny"], env)
    assert again.returncode == 0 and Path(again.stdout.strip()) == snapshot, again.stderr
    _offline(monkeypatch, cache)
    scorer = Scorer.from_pretrained("org/tiny", revision=commit, device="cpu")
    expected = Scorer.from_pretrained(model_dir, device="cpu").score(photos[0]).mean
    assert scorer.score(photos[0]).mean == pytest.approx(expected, abs=1e-6) and scorer.name == "org/tiny"
    with pytest.raises(IAAError, match="org/other: not a model folder, and not in the Hugging Face cache") as error:
        Scorer.from_pretrained("org/other")
    assert "HF_HUB_OFFLINE" in str(error.value) and "\n" not in str(error.value)


def _offline(monkeypatch, cache: Path) -> None:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE=cache for this process (huggingface_hub reads both at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def test_card_carries_the_synthetic_label_flag_and_metrics(tmp_path):
    model_dir = save_tiny_student(tmp_path / "demo")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(synthetic_labels=True, extra={"dataset": "labels", "val_srcc": 0.35, "val_plcc": 0.45, "epoch": 2})
    (model_dir / "config.json").write_text(json.dumps(config))
    card = model_card(model_dir, "org/demo", {"split": "test", "dataset": "labels", "overall": {"n": 20, "srcc": 0.5,
                                                                                                "plcc": 0.25}})
    assert "synthetic-labels" in card and "SYNTHETIC" in card
    assert "| validation (epoch 2) | 0.350 | 0.450 |" in card and "| test (labels, n=20) | 0.500 | 0.250 |" in card


def test_folders_win_over_hub_names_and_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not is_hub_name("org/local") and is_hub_name("org/remote") and not is_hub_name("/abs/path")
    assert resolve_model("org/local") == Path("org/local")
    with pytest.raises(IAAError, match="revision applies to hub names"):
        resolve_model("org/local", revision="v1")
