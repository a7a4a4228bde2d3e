"""The shared batched input path: one buffer per batch, grouped resizing equal to the per-image path, prefetching."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_distill.imaging import decode_image
from iaa_distill.inputs import BatchReader, in_threads, iter_prepared, prefetch, prepare
from iaa_distill.preprocessing import resize_whole
from tests.conftest import save_tiny_student, write_jpegs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mixed_photos(tmp_path_factory, sample_photos) -> list[str]:
    """JPEGs of two sizes (one large enough for a reduced-size decode), a PNG, a rotated JPEG and a broken file."""
    root = tmp_path_factory.mktemp("inputs")
    paths = write_jpegs(root / "a", sample_photos, 3, size=64) + write_jpegs(root / "b", sample_photos, 3, size=200)
    Image.fromarray(sample_photos["coffee"]).resize((50, 30)).save(root / "photo.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(sample_photos["chelsea"]).resize((70, 40)).save(root / "rotated.jpg", exif=exif)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return [str(p) for p in paths[:2]] + [str(root / "photo.png")] + [str(p) for p in paths[2:]] + [
        str(root / "rotated.jpg"), str(root / "broken.jpg")]


@pytest.mark.parametrize("encoded", [False, True], ids=["worker-decode", "device-decode"])
def test_grouped_resize_equals_the_per_image_path_exactly(mixed_photos, encoded):
    """Every output size of every image equals `resize_whole` of the shared decoder's image (tolerance: none)."""
    sizes = [(48, "bicubic"), (40, "bilinear")]
    reader = BatchReader(mixed_photos, [list(range(len(mixed_photos)))], min_side=48, encoded=encoded)
    raw = reader[0]
    assert raw.pixels.ndim == 1 and raw.pixels.dtype == torch.uint8  # one contiguous buffer per batch
    batch = prepare(raw, CPU, sizes, reader.paths, min_side=48)
    broken = len(mixed_photos) - 1
    assert sorted(batch.rows) == list(range(broken)) and list(batch.errors) == [broken]
    assert "broken.jpg" in batch.errors[broken] and len(batch) == len(mixed_photos)
    for (size, interpolation), images in zip(sizes, batch.images):
        assert images.shape == (broken, 3, size, size) and images.dtype == torch.uint8
        for row, image in zip(batch.rows, images):
            expected = resize_whole(size, interpolation)(decode_image(mixed_photos[row], min_side=48))
            if encoded and raw.jpeg_rows.tolist().count(row) and Image.open(mixed_photos[row]).width >= 96:
                # decoded whole on the device, not at reduced size: close, not equal
                assert (image.int() - expected.int()).abs().float().mean() < 3
            else:
                assert torch.equal(image, expected), mixed_photos[row]


def test_worker_decode_groups_equal_sizes_into_one_slice(mixed_photos):
    raw = BatchReader(mixed_photos, [list(range(len(mixed_photos)))], min_side=48)[0]
    shapes = [tuple(s) for s in raw.shapes.tolist()]
    assert shapes == sorted(shapes)  # equal sizes are neighbours: one resize call per size and output
    assert raw.pixels.numel() == sum(h * w * 3 for h, w in shapes)
    assert len(set(shapes)) < len(shapes)


def test_prefetch_keeps_order_raises_errors_and_stops_when_left():
    seen = []
    assert list(prefetch(range(10), lambda x: seen.append(x) or x * 2, CPU)) == [x * 2 for x in range(10)]

    def fail(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        return x

    with pytest.raises(ValueError, match="bad item 3"):
        list(prefetch(range(10), fail, CPU))
    started = threading.active_count()
    produced = []
    for value in prefetch(range(1000), lambda x: produced.append(x) or x, CPU, depth=2):
        if value == 2:
            break
    assert len(produced) < 10 and threading.active_count() == started  # the thread stopped and was joined


def test_prefetch_starts_iterating_in_the_callers_thread():
    """A DataLoader forks its workers when it is iterated: from the caller's thread, not the background one (a
    worker forked from it hung freeing an ONNX Runtime session that only the caller's frames held)."""

    class Items:
        def __iter__(self):
            self.thread = threading.current_thread()
            return iter(range(3))

    items = Items()
    assert list(prefetch(items, lambda x: x, CPU)) == [0, 1, 2] and items.thread is threading.current_thread()


def test_thread_pool_reader_keeps_batch_order(mixed_photos):
    reader = BatchReader(mixed_photos, [[i] for i in range(len(mixed_photos))], min_side=32)
    with ThreadPoolExecutor(3) as pool:
        batches = list(in_threads(reader, pool, lookahead=2))
    assert [b.rows.tolist() or [e[0] for e in b.errors] for b in batches] == [[i] for i in range(len(mixed_photos))]


def test_iter_prepared_covers_every_row_once_with_workers(mixed_photos):
    batches = [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    seen = []
    for batch in iter_prepared(mixed_photos, batches, [(32, "bicubic")], CPU, num_workers=2):
        seen += batch.rows + list(batch.errors)
    assert sorted(seen) == list(range(len(mixed_photos)))


def test_latency_mode_scores_without_starting_dataloader_workers(tmp_path, mixed_photos, monkeypatch):
    from iaa_distill.scoring import Scorer

    scorer = Scorer.from_pretrained(save_tiny_student(tmp_path / "model"), device="cpu")
    batched = scorer.score_paths(mixed_photos, batch_size=4, num_workers=0)

    def no_dataloader(*args, **kwargs):
        raise AssertionError("latency mode started a DataLoader")

    monkeypatch.setattr(torch.utils.data, "DataLoader", no_dataloader)
    one_by_one = scorer.score_paths(mixed_photos, batch_size=1, num_workers=2)
    assert [r.path for r in one_by_one] == mixed_photos
    assert [r.ok for r in one_by_one] == [True] * (len(mixed_photos) - 1) + [False]
    np.testing.assert_allclose([r.mean for r in one_by_one[:-1]], [r.mean for r in batched[:-1]], atol=1e-4)
    direct = scorer.score(mixed_photos[:3])  # in-memory API: preprocessed in the same warm pool
    np.testing.assert_allclose([r.mean for r in direct], [r.mean for r in batched[:3]], atol=1e-4)


def test_camera_jpegs_take_the_shared_decoder_on_every_device(tmp_path, sample_photos):
    """The device-decode path gets a plain JPEG's bytes, but a camera JPEG goes to the shared decoder, which reads
    its MPF preview: the same pixels, and so the same scores, as on the CPU."""
    from iaa_distill.bench.photos import add_mpf_preview
    from iaa_distill.inputs import plain_jpeg

    plain, camera = tmp_path / "plain.jpg", tmp_path / "camera.jpg"
    Image.fromarray(sample_photos["chelsea"]).resize((1200, 900)).save(plain, quality=90)
    camera.write_bytes(add_mpf_preview(plain.read_bytes(), long_side=640))
    assert plain_jpeg(plain.read_bytes()) and not plain_jpeg(camera.read_bytes())
    raw = BatchReader([str(plain), str(camera)], [[0, 1]], min_side=200, encoded=True)[0]
    assert raw.jpeg_rows.tolist() == [0] and raw.rows.tolist() == [1]
    assert raw.shapes.tolist() == [list(np.asarray(decode_image(camera, min_side=200)).shape[:2])] == [[240, 320]]
