"""The shared decoder on a corpus of bad and odd files generated here, plus real photos for sanity."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaa_distill.errors import DecodeError
from iaa_distill.imaging import decode_image, is_image_file


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.fixture
def photo(sample_photos) -> np.ndarray:
    """A real photograph, 128x96."""
    return np.asarray(Image.fromarray(sample_photos["chelsea"]).resize((128, 96)))


def jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_colour_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of one colour: tiny on disk, huge once decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "not a recognised image"),
        ("random.jpg", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a recognised image"),
        ("notes.jpg", "just some text, not a photo\n".encode(), "not a recognised image"),
        ("header only.png", b"\x89PNG\r\n\x1a\n", "could not decode|not a recognised image"),
    ],
)
def test_non_images_raise_decode_error_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason) as info:
        decode_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_files(tmp_path, photo):
    data = jpeg_bytes(photo)
    for name, content in [("truncated.jpg", data[: len(data) // 2]), ("cut header.jpg", data[:300])]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DecodeError) as info:
            decode_image(path)
        assert str(path) in str(info.value)
        with pytest.raises(DecodeError):
            decode_image(path, min_side=16)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[:-2000])
    with pytest.raises(DecodeError, match="truncated.png"):
        decode_image(tmp_path / "truncated.png")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DecodeError, match="gone.jpg: file not found"):
        decode_image(tmp_path / "gone.jpg")
    with pytest.raises(DecodeError, match="is a directory"):
        decode_image(tmp_path)


def test_real_photo_round_trip_from_path_bytes_and_file(tmp_path, photo):
    data = jpeg_bytes(photo)
    (tmp_path / "ünï cødé photo.jpg").write_bytes(data)
    for source in (tmp_path / "ünï cødé photo.jpg", str(tmp_path / "ünï cødé photo.jpg"), data, io.BytesIO(data)):
        img = decode_image(source)
        assert img.mode == "RGB" and img.size == (128, 96)
        assert np.abs(rgb(img) - photo).mean() < 4
    with pytest.raises(DecodeError, match="^upload.jpg: "):
        decode_image(b"garbage", name="upload.jpg")


def test_cmyk_jpeg_becomes_rgb(tmp_path, photo):
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    img = decode_image(tmp_path / "cmyk.jpg")
    assert img.mode == "RGB" and img.size == (128, 96)
    assert np.abs(rgb(img) - photo).mean() < 6


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = rgb(decode_image(tmp_path / "deep.png"))
    assert out.shape == (8, 64, 3) and (out[..., 0] == out[..., 1]).all()
    np.testing.assert_allclose(out[0, :, 0], ramp[0] / 65535 * 255, atol=1)


def test_grayscale_and_tiny_images(tmp_path, photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray.jpg", quality=95)
    assert decode_image(tmp_path / "gray.jpg", min_side=16).size == (32, 24)  # draft decode at 1/4
    out = rgb(decode_image(tmp_path / "gray.jpg"))
    assert out.shape == (96, 128, 3) and (out[..., 0] == out[..., 2]).all()
    assert np.abs(out[..., 0] - gray).mean() < 3
    Image.new("RGB", (1, 1), (200, 10, 30)).save(tmp_path / "dot.png")
    Image.new("RGB", (1, 1), (200, 10, 30)).save(tmp_path / "dot.jpg", quality=100)
    assert decode_image(tmp_path / "dot.png").getpixel((0, 0)) == (200, 10, 30)
    assert decode_image(tmp_path / "dot.jpg", min_side=224).size == (1, 1)


def test_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :2, 3] = 0  # transparent
    rgba[:, 2:4, 3] = 128  # half
    rgba[:, 4:, 3] = 255  # opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = rgb(decode_image(tmp_path / "alpha.png"))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 5]) == (255, 0, 0)
    assert 120 <= out[0, 3, 1] <= 135 and out[0, 3, 0] == 255

    palette = Image.new("P", (6, 4), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(0, (0, 0, 3, 4))
    palette.save(tmp_path / "palette.png", transparency=0)
    out = rgb(decode_image(tmp_path / "palette.png"))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 5]) == (0, 0, 255)

    la = Image.fromarray(rgba[..., [1, 3]], "LA")
    la.save(tmp_path / "la.png")
    out = rgb(decode_image(tmp_path / "la.png"))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 5]) == (0, 0, 0)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    out = decode_image(tmp_path / "anim.gif")
    assert out.mode == "RGB" and out.getpixel((4, 4)) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((32, 64, 3), dtype=np.uint8)
    array[:, :32] = (255, 0, 0)  # left half red
    array[:, 32:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (tmp_path / "rotated.jpg").write_bytes(jpeg_bytes(array, exif=exif.tobytes()))
    out = rgb(decode_image(tmp_path / "rotated.jpg"))
    assert out.shape == (64, 32, 3)  # width and height swapped
    assert out[8, 16, 0] > 200 and out[8, 16, 2] < 60  # top is the former left (red)
    assert out[56, 16, 2] > 200 and out[56, 16, 0] < 60  # bottom is the former right (blue)


def test_decompression_bomb_is_refused(tmp_path, photo):
    (tmp_path / "bomb.png").write_bytes(one_colour_png(12_000, 12_000))
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(DecodeError, match=r"bomb.png: 12000x12000 = 144,000,000 pixels exceeds the limit"):
        decode_image(tmp_path / "bomb.png")
    (tmp_path / "huge.png").write_bytes(one_colour_png(20_000, 20_000))
    with pytest.raises(DecodeError, match="huge.png: .*decompression bomb"):
        decode_image(tmp_path / "huge.png")
    (tmp_path / "small.png").write_bytes(one_colour_png(300, 200))
    assert decode_image(tmp_path / "small.png").size == (300, 200)
    with pytest.raises(DecodeError, match="small.png: 300x200"):
        decode_image(tmp_path / "small.png", max_pixels=50_000)


def test_a_raised_pixel_limit_is_not_undercut_by_pils_own(tmp_path, monkeypatch):
    """PIL refuses to open images above twice its own limit; --max-pixels above that must still work."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    (tmp_path / "big.png").write_bytes(one_colour_png(300, 200))  # 60,000 px: over twice PIL's limit
    assert decode_image(tmp_path / "big.png", max_pixels=100_000).size == (300, 200)
    with pytest.raises(DecodeError, match="big.png: 300x200 = 60,000 pixels exceeds the limit of 50,000"):
        decode_image(tmp_path / "big.png", max_pixels=50_000)


def test_draft_decode_of_large_jpeg(tmp_path, photo):
    big = np.asarray(Image.fromarray(photo).resize((2000, 1500)))
    (tmp_path / "big.jpg").write_bytes(jpeg_bytes(big))
    assert decode_image(tmp_path / "big.jpg").size == (2000, 1500)
    small = decode_image(tmp_path / "big.jpg", min_side=200)
    assert small.size == (500, 375)  # 1/4 scale; 1/8 would give a short side of 188 < 200
    assert decode_image(tmp_path / "big.jpg", min_side=1000).size == (2000, 1500)
    expected = np.asarray(Image.fromarray(big).resize((500, 375), Image.BILINEAR), dtype=np.int16)
    assert np.abs(rgb(small) - expected).mean() < 8

    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "big rotated.jpg").write_bytes(jpeg_bytes(big, exif=exif.tobytes()))
    assert decode_image(tmp_path / "big rotated.jpg", min_side=200).size == (375, 500)


def test_is_image_file():
    assert is_image_file(Path("a/B.JPG")) and is_image_file(Path("x.webp"))
    assert not is_image_file(Path("labels.csv")) and not is_image_file(Path("jpg"))


def test_one_resize_refuses_unknown_interpolation_names():
    import torch

    from iaa_distill.errors import IAAError
    from iaa_distill.preprocessing import eval_transform, resize_whole, resize_whole_batch

    image = Image.new("RGB", (30, 20), (200, 10, 10))
    assert tuple(resize_whole(16, "bilinear")(image).shape) == (3, 16, 16)
    batch = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    assert torch.equal(resize_whole_batch(batch, 16, "bilinear")[1], resize_whole(16, "bilinear")(image))
    for make in (lambda: resize_whole(16, "lanczos"), lambda: eval_transform(16, "Bicubic"),
                 lambda: resize_whole_batch(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 2, "area")):
        with pytest.raises(IAAError, match="unknown interpolation"):
            make()


# -- RAW (LibRaw) and HEIC (pillow-heif) ---------------------------------------------------------
def test_heic_decodes_to_rgb(tmp_path, photo):
    from tests.camera_files import write_heic

    out = rgb(decode_image(write_heic(tmp_path / "phone.HEIC", photo)))
    assert out.shape == (96, 128, 3) and np.abs(out - photo).mean() < 12


def test_raw_uses_a_large_enough_jpeg_preview(tmp_path, photo):
    from tests.camera_files import write_dng

    path = write_dng(tmp_path / "shot.DNG", photo)  # preview 128x96, raw mosaic 96x64
    out = rgb(decode_image(path, min_side=64))
    assert out.shape == (96, 128, 3) and np.abs(out - photo).mean() < 12  # the preview, not the random mosaic


def test_raw_bitmap_preview_from_bytes(tmp_path, photo):
    from tests.camera_files import write_dng

    data = write_dng(tmp_path / "shot.dng", photo, jpeg=False).read_bytes()
    assert np.array_equal(rgb(decode_image(data, name="upload.dng", min_side=32)), photo)


def test_raw_without_usable_preview_is_demosaiced(tmp_path, photo):
    from tests.camera_files import write_dng

    small = photo[::4, ::4].copy()  # 32x24 preview: too small for min_side 48
    for path in (write_dng(tmp_path / "tiny.nef", small), write_dng(tmp_path / "none.dng", None)):
        assert decode_image(path, min_side=48).size == (96, 64)  # the whole mosaic, not half size
    assert decode_image(tmp_path / "none.dng", min_side=20).size == (48, 32)  # half size suffices


def test_broken_raw_raises_decode_error(tmp_path):
    (tmp_path / "broken.CR2").write_bytes(b"not a raw file at all" * 10)
    with pytest.raises(DecodeError, match="broken.CR2: could not decode RAW") as info:
        decode_image(tmp_path / "broken.CR2")
    assert "\n" not in str(info.value)


def test_raw_and_heic_count_as_image_files():
    assert all(is_image_file(Path(n)) for n in ("a.NEF", "b.cr2", "c.ARW", "d.dng", "e.heic", "f.HEIF"))


def test_rawpy_fork_warning_only_when_the_parent_ran_libraw_threads(tmp_path):
    """Forked workers decoding RAW files: rawpy's deadlock warning is a false alarm (and hidden) unless a parent
    process ran LibRaw's OpenMP code (a demosaic) before forking, where it is real and shown."""
    code = f"""
import multiprocessing as mp, warnings, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import numpy as np
from tests.camera_files import write_dng
from iaa_distill.imaging import decode_image
preview = np.zeros((96, 128, 3), np.uint8)
with_preview, mosaic = write_dng({str(tmp_path / 'a.dng')!r}, preview), write_dng({str(tmp_path / 'b.dng')!r}, None)

def decode(path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        decode_image(path, min_side=20)
    return any("fork" in str(w.message) for w in seen)

if __name__ == "__main__":
    mp.set_start_method("fork")  # as DataLoader workers on Linux
    with mp.Pool(1) as pool:
        print(pool.map(decode, [str(with_preview), str(mosaic)]))
    decode_image(mosaic, min_side=20)  # the parent demosaics: LibRaw's threads now run here
    with mp.Pool(1) as pool:
        print(pool.map(decode, [str(with_preview)]))
"""
    script = tmp_path / "fork_check.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["[False, False]", "[True]"], run.stdout


def test_a_large_png_is_reduced_before_rotation_and_keeps_its_orientation(tmp_path, photo):
    from PIL import ImageOps

    big = Image.fromarray(photo).resize((1200, 800))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown upright as 800 x 1200
    big.save(tmp_path / "big.png", exif=exif)
    image = decode_image(tmp_path / "big.png", min_side=100)
    assert image.size == (200, 300)  # shrunk by 4: short side 200 >= 2 x min_side, never a full-size RGB copy
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "big.png")).reduce(4), dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).max() <= 1
    assert decode_image(tmp_path / "big.png").size == (800, 1200)  # without min_side: the whole image


@pytest.fixture
def camera_primary(sample_photos) -> bytes:
    """A 1200x900 JPEG of a real photograph, taken at 2026:05:01 10:00:00, orientation 6 (rotate to display)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[36867] = "2026:05:01 10:00:00"
    image = np.asarray(Image.fromarray(sample_photos["chelsea"]).resize((1200, 900), Image.BICUBIC))
    return jpeg_bytes(image, exif=exif.tobytes())


def test_a_camera_jpeg_is_decoded_from_its_mpf_preview(tmp_path, camera_primary):
    from iaa_distill.bench.photos import add_mpf_preview
    from iaa_distill.imaging import decode_photo

    plain, camera = tmp_path / "plain.jpg", tmp_path / "camera.jpg"
    plain.write_bytes(camera_primary)
    camera.write_bytes(add_mpf_preview(camera_primary, long_side=640))  # preview 640x480
    full = decode_photo(plain, min_side=200)
    preview = decode_photo(camera, min_side=200)
    assert full.image.size == (225, 300)  # the photo at 1/4, upright
    assert preview.image.size == (240, 320)  # the preview at 1/2, upright by the photo's orientation
    assert preview.taken == full.taken is not None  # capture time from the photo
    assert np.abs(rgb(preview.image.resize(full.image.size, Image.BILINEAR)) - rgb(full.image)).mean() < 6
    assert decode_image(camera).size == (900, 1200)  # no min_side: the photo in full
    assert decode_image(camera.read_bytes(), min_side=200).size == (240, 320)


def test_a_preview_keeps_the_photos_orientation_only(tmp_path, camera_primary):
    """A preview with an orientation tag of its own (the same as the photo's) is not rotated twice."""
    from iaa_distill.bench.photos import with_mpf_preview

    exif = Image.Exif()
    exif[0x0112] = 6
    small = np.asarray(Image.open(io.BytesIO(camera_primary)).resize((640, 480)))
    camera = with_mpf_preview(camera_primary, jpeg_bytes(small, exif=exif.tobytes()))
    assert decode_image(camera, min_side=200).size == (240, 320)


@pytest.mark.parametrize("size", [(640, 360), (480, 640), (266, 200)],
                         ids=["another-aspect-ratio", "stored-rotated", "too-small"])
def test_an_unsuitable_preview_is_ignored(camera_primary, size):
    from iaa_distill.bench.photos import add_mpf_preview

    camera = add_mpf_preview(camera_primary, size=size)
    assert decode_image(camera, min_side=224).size == (225, 300)  # the photo at 1/4, as without a preview


def test_a_damaged_mpf_index_falls_back_to_the_photo(tmp_path, camera_primary):
    from iaa_distill.bench.photos import add_mpf_preview

    camera = add_mpf_preview(camera_primary, long_side=640)
    cut = camera[:len(camera) - 2000]  # the index points at a preview that is cut short
    for source in (cut, io.BytesIO(cut)):
        assert decode_image(source, min_side=200).size == (225, 300)
    no_preview = camera[:len(camera_primary) + 100]  # the index points past the end of the file
    assert decode_image(no_preview, min_side=200).size == (225, 300)


@pytest.mark.filterwarnings("ignore:Image appears to be a malformed MPO")  # the preview read on its own
def test_the_bench_writes_mpf_previews_exiftool_reads_as_cameras(tmp_path, camera_primary):
    from iaa_distill.bench.photos import add_mpf_preview

    plain, camera = tmp_path / "plain.jpg", tmp_path / "camera.jpg"
    plain.write_bytes(camera_primary)
    camera.write_bytes(add_mpf_preview(camera_primary, long_side=640))

    def exiftool(*args: str) -> bytes:
        return subprocess.run(["exiftool", *args], capture_output=True, check=True).stdout

    assert exiftool("-s3", "-MPImageType", "-NumberOfImages", str(camera)).decode().split("\n")[:2] == [
        "Large Thumbnail (full HD equivalent)", "2"]
    assert exiftool("-validate", "-warning", "-a", str(camera)) == exiftool("-validate", "-warning", "-a", str(plain))
    assert Image.open(io.BytesIO(exiftool("-b", "-PreviewImage", str(camera)))).size == (640, 480)
