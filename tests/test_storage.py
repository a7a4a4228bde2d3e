"""The storage layer shared by the feature cache, the image cache and the score output."""
from __future__ import annotations

import numpy as np
import pytest

from iaa_distill.errors import IAAError
from iaa_distill.features.cache import FeatureCacheManifest
from iaa_distill.storage import IdIndex, Journal, RowStore, create_array, read_journal


def test_journal_ignores_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    with Journal(path) as journal:
        journal.append({"a": 1}, {"a": 2})
    with open(path, "ab") as f:  # as if killed while appending
        f.write(b'{"a": 3, "b')
    assert read_journal(path) == [{"a": 1}, {"a": 2}]
    with Journal(path) as journal:
        journal.append({"a": 4})
    assert read_journal(path) == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert path.read_bytes().endswith(b'{"a": 4}\n')
    assert read_journal(tmp_path / "none.jsonl") == []


def test_row_store_writes_rows_in_place_and_journals_commits(tmp_path):
    create_array(tmp_path / "rows.npy", (5, 2, 3), np.uint8)
    assert not np.load(tmp_path / "rows.npy").any()
    values = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    with RowStore(tmp_path / "rows.npy", tmp_path / "rows.jsonl") as store:
        store.write([3, 1], values)
        store.commit({"rows": [3, 1]})
    array = np.load(tmp_path / "rows.npy")
    assert (array[3] == values[0]).all() and (array[1] == values[1]).all() and not array[[0, 2, 4]].any()
    assert read_journal(tmp_path / "rows.jsonl") == [{"rows": [3, 1]}]


def test_id_index_names_missing_and_repeated_ids():
    index = IdIndex(["a", "b", "c"], "cache X")
    assert index.rows_for(["c", "a"]).tolist() == [2, 0] and "b" in index and len(index) == 3
    with pytest.raises(IAAError, match="cache X: image 'zz' is not in it \\(and 1 more\\)"):
        index.rows_for(["a", "zz", "yy"])
    with pytest.raises(IAAError, match="image id 'a' appears more than once"):
        IdIndex(["a", "b", "a"], "dataset 'd'")


def test_feature_cache_manifest_fingerprints_its_identity_only():
    base = FeatureCacheManifest(teachers=[{"name": "t", "input_size": 8}], dim=4,
                                dataset={"name": "d", "split": "all"}, created="monday")
    done = FeatureCacheManifest.from_dict({**base.to_dict(), "created": "tuesday", "complete": True})
    assert done.fingerprint() == base.fingerprint() and not base.differences(done)
    other = FeatureCacheManifest.from_dict({**base.to_dict(), "teachers": [{"name": "t", "input_size": 9}]})
    assert other.fingerprint() != base.fingerprint()
    assert base.differences(other) == ["t input_size 8 vs 9"]
    assert base["dataset"]["split"] == "all" and base.get("missing", 1) == 1
