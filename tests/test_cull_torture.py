"""Tiny runs of the kill -9 torture (benchmarks/cull_torture.py): 8 photos, 4 kills over copy and move; 4 photos,
3 kills during embedded rating writes, a move and the undo."""
from __future__ import annotations

import random
import shutil

import pytest

from benchmarks import cull_torture


@pytest.mark.slow
def test_kill_9_during_copy_and_move_loses_nothing(tmp_path, capsys):
    assert cull_torture.main(["--photos", "8", "--kills", "4", "--keep", str(tmp_path / "torture")]) == 0
    out = capsys.readouterr().out
    assert "all invariants hold" in out and "4 kills" in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_kill_9_during_embedded_rating_writes_and_undo_leaves_each_photo_old_or_new(tmp_path):
    result = cull_torture.embedded_torture(tmp_path, photos=4, kills=3, rng=random.Random(0))
    assert result["kills"] == 3 and all(result["checks"].values()), result
