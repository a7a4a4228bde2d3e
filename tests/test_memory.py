"""Every batch command lets malloc keep freed memory for reuse; the long-lived service does not."""
from __future__ import annotations

import pytest

import iaa_distill.cli as cli
from iaa_distill.memory import keep_freed_memory


@pytest.mark.parametrize(("argv", "kept"), [
    (["data", "check", "csv:/nonexistent/labels.csv"], True),
    (["serve", "--model", "/nonexistent/model"], False),
])
def test_batch_commands_keep_freed_memory_and_serve_does_not(monkeypatch, argv, kept):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    assert cli.main(argv) != 0  # both fail fast on the missing path, after the setting is (or is not) made
    assert bool(calls) is kept


def test_keep_freed_memory_runs_in_this_process():
    keep_freed_memory()  # glibc: sets two mallopt parameters; elsewhere a no-op, never an error
