"""A tiny run of the kill -9 torture (benchmarks/cull_torture.py): 8 photos, 4 kills over copy and move."""
from __future__ import annotations

import pytest

from benchmarks import cull_torture


@pytest.mark.slow
def test_kill_9_during_copy_and_move_loses_nothing(tmp_path, capsys):
    assert cull_torture.main(["--photos", "8", "--kills", "4", "--keep", str(tmp_path / "torture")]) == 0
    out = capsys.readouterr().out
    assert "all invariants hold" in out and "4 kills" in out
