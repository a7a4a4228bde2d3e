"""A student run killed with SIGKILL (no chance to clean up) resumes and ends exactly like an uninterrupted run."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.conftest import write_jpegs
from tests.test_student_training import assert_same_weights


def _labels_csv(folder, photos):
    paths = write_jpegs(folder / "images", photos, 40, size=64)
    rng = np.random.default_rng(3)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *[f"votes_{k}" for k in range(1, 6)], "split"])
        for i, path in enumerate(paths):
            split = "train" if i < 28 else "val" if i < 36 else "test"
            writer.writerow([f"images/{path.name}", *rng.integers(1, 30, 5), split])
    return f"csv:{folder / 'labels.csv'}"


def _command(spec, out, cache):
    return [sys.executable, "-m", "iaa_distill", "train-student", spec, "--baseline", "--out", str(out),
            "--image-cache", str(cache), "--input-size", "32", "--train-resize", "40", "--epochs", "8",
            "--batch-size", "8", "--workers", "0", "--deterministic", "--seed", "1"]


def test_sigkill_during_training_then_rerun_equals_uninterrupted(tmp_path, sample_photos):
    spec = _labels_csv(tmp_path, sample_photos)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_command(spec, whole, tmp_path / "cache"), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_command(spec, killed, tmp_path / "cache"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"

    rerun = subprocess.run(_command(spec, killed, tmp_path / "cache"), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stdout
    assert_same_weights(whole, killed)
