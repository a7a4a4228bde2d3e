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


def test_one_reuse_decision_for_every_output():
    import inspect

    from iaa_distill.features.cache import prepare_cache
    from iaa_distill.recipe import StageRunner
    from iaa_distill.storage import Reuse, resume_or_create_rows, reuse_decision
    from iaa_distill.training.image_cache import ensure_image_cache
    from iaa_distill.training.spine import RunFolder

    assert reuse_decision(None, True) is Reuse.NONE
    assert reuse_decision([], True) is Reuse.UP_TO_DATE
    assert reuse_decision([], False) is Reuse.RESUME
    assert reuse_decision(["a 1 -> 2"], True) is Reuse.CHANGED
    with pytest.raises(IAAError, match=r"^out: made differently \(a 1 -> 2; b\)$"):
        reuse_decision(["a 1 -> 2", "b"], False, "out: made differently ({changes})")
    # `iaa fit`'s stages, training run folders and the row caches all decide through it
    for user in (StageRunner.run, RunFolder.finished, RunFolder.start, resume_or_create_rows, prepare_cache,
                 ensure_image_cache):
        assert "reuse_decision(" in inspect.getsource(user), user.__qualname__


def test_a_complete_image_cache_is_reused_by_its_key_an_unfinished_one_resumed_only_if_identical(tmp_path,
                                                                                                  sample_photos):
    import json

    from iaa_distill.training.image_cache import MANIFEST, ensure_image_cache
    from tests.test_student_training import make_dataset

    records = make_dataset(tmp_path / "d", sample_photos, count=4).records
    cache = ensure_image_cache(records, 24, root=tmp_path / "c", num_workers=0, batch_size=2)
    manifest, reference = json.loads((cache.directory / MANIFEST).read_text()), np.array(cache.pixels())
    # built elsewhere (nvJPEG, another copy of the dataset): complete, so reused as it is
    elsewhere = {**manifest, "decoder": "torchvision", "dataset_fingerprint": "x"}
    (cache.directory / MANIFEST).write_text(json.dumps(elsewhere))
    again = ensure_image_cache(records, 24, root=tmp_path / "c", num_workers=0, batch_size=2)
    assert again.manifest.decoder == "torchvision"
    # unfinished and made differently: started afresh under the wanted identity
    (cache.directory / MANIFEST).write_text(json.dumps({**manifest, "decoder": "torchvision", "complete": False}))
    rebuilt = ensure_image_cache(records, 24, root=tmp_path / "c", num_workers=0, batch_size=2)
    assert rebuilt.manifest.decoder == "pil" and rebuilt.complete
    np.testing.assert_array_equal(rebuilt.pixels(), reference)


def test_atomic_file_replaces_whole_or_keeps_the_old_file(tmp_path):
    from iaa_distill.artifacts import FILE_MODE, atomic_file, atomic_write_bytes, atomic_write_text

    path = tmp_path / "sub" / "photo.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert path.read_bytes() == b"old" and sorted(p.name for p in path.parent.iterdir()) == ["photo.bin"]
    atomic_write_text(path, "caf\u00e9 \udcff")  # a non-UTF-8 name byte kept as a surrogate escape
    assert path.read_bytes() == "café".encode() + b" \xff"
    assert path.stat().st_mode & 0o777 == FILE_MODE


def test_saved_models_get_the_usual_permissions(tmp_path):
    """safetensors writes its file anew (0600): a model folder must stay readable to whoever serves or copies it."""
    import torch

    from iaa_distill.artifacts import FILE_MODE, WEIGHTS_NAME, save_artifact

    save_artifact(tmp_path / "model", "test", {}, {"w": torch.zeros(2)})
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()} == {
        WEIGHTS_NAME: FILE_MODE, "config.json": FILE_MODE}
