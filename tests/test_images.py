"""facemask.data.images: every odd or broken file decodes to RGB or fails with a clear reason."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from facemask.data.images import (
    BACKGROUND,
    ImageError,
    ImageInfo,
    load_array,
    open_image,
    resize_square,
    suffix_matches,
)

GREY = list(BACKGROUND)


def noise(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """Random RGB pixels: compress badly, so every byte of the stream matters."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def encode(arr: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kwargs)
    return buf.getvalue()


def reason(path: Path, **kwargs) -> str:
    """The ImageError message open_image gives for `path` (fails the test if it decodes)."""
    with pytest.raises(ImageError) as err:
        open_image(path, **kwargs)
    return str(err.value)


def category(message: str) -> str:
    """What prepare's report groups rejected files by: the text before the first ':'."""
    return message.split(":", 1)[0]


# --- files that must be refused -------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty" in reason(path)


def test_truncated_images_are_not_patched_up() -> None:
    # PIL would otherwise fill the missing half with grey and call it a picture.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp")])
@pytest.mark.parametrize("draft_size", [None, 8])
def test_truncated(tmp_path: Path, fmt: str, suffix: str, draft_size: int | None) -> None:
    data = encode(noise(), fmt)
    path = tmp_path / f"half{suffix}"
    path.write_bytes(data[: len(data) // 2])
    # The draft (scaled-down) JPEG decode must still read to the end and notice.
    msg = reason(path, draft_size=draft_size)
    assert category(msg) == "corrupt or truncated"
    assert "truncated" in msg


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(np.random.default_rng(1).bytes(5000), id="random-bytes"),
        pytest.param(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", id="html"),
        pytest.param(b"just some text\n" * 20, id="text"),
    ],
)
def test_not_an_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    assert category(reason(path)) == "not an image PIL can identify"


def flip_middle(data: bytes, count: int = 64) -> bytes:
    """Invert `count` bytes in the middle of the file, leaving its header intact."""
    out = bytearray(data)
    mid = len(out) // 2
    for i in range(mid, mid + count):
        out[i] ^= 0xFF
    return bytes(out)


def test_corrupt_png_stream(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(flip_middle(encode(noise(), "PNG")))
    # zlib's checks catch the damage inside IDAT.
    assert category(reason(path)) == "corrupt or truncated"


def test_corrupt_jpeg_stream_decodes_to_damaged_pixels(tmp_path: Path) -> None:
    """Documented limitation: JPEG has no checksum, so libjpeg decodes damaged data.

    The file is kept (at the right size) and only its pixels are wrong; catching that
    would need a content check, which is not open_image's job.
    """
    clean = tmp_path / "clean.jpg"
    clean.write_bytes(encode(noise(), "JPEG", quality=90))
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(flip_middle(clean.read_bytes()))
    good, _ = open_image(clean)
    bad, info = open_image(damaged)
    assert (info.width, info.height) == (32, 24) and bad.size == good.size
    assert not np.array_equal(np.asarray(bad), np.asarray(good))


@pytest.mark.parametrize("max_pixels", [1000, 6000])  # far over the limit, and within 2x of it
def test_decompression_bomb(tmp_path: Path, max_pixels: int) -> None:
    # PIL raises above twice the limit and only warns between 1x and 2x; both must refuse.
    path = save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the warning must not leak out either
        msg = reason(path, max_pixels=max_pixels)
    assert category(msg) == "decompression bomb"
    assert before == Image.MAX_IMAGE_PIXELS


def test_max_pixels_allows_images_under_it(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (100, 100)), tmp_path / "ok.png")
    before = Image.MAX_IMAGE_PIXELS
    img, _ = open_image(path, max_pixels=10_000)
    assert img.size == (100, 100)
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("kind", ["directory", "missing", "fifo"])
def test_unreadable_paths(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.jpg"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(path)  # opening it for reading would block forever
    msg = reason(path)
    assert category(msg) == "cannot read file"
    assert {"directory": "is a directory", "missing": "No such file", "fifo": "not a regular"}[
        kind
    ] in msg


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
def test_permission_denied(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8)), tmp_path / "locked.png")
    path.chmod(0)
    try:
        msg = reason(path)
    finally:
        path.chmod(0o644)
    assert category(msg) == "cannot read file" and "Permission denied" in msg


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the damaged headers
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_mutated_bytes_give_image_error_or_an_image(tmp_path: Path, fmt: str) -> None:
    """Small fuzz: whatever the damage, the only exception is ImageError (never a crash
    that would stop prepare), and anything decoded is RGB."""
    data = encode(noise(), fmt)
    rng = np.random.default_rng(7)
    path = tmp_path / "fuzz"
    for i in range(40):
        out = bytearray(data)
        region = min(len(out), 128) if i % 2 else len(out)  # headers, then anywhere
        for pos in rng.integers(0, region, 3):
            out[pos] = rng.integers(0, 256)
        path.write_bytes(bytes(out))
        try:
            img, _ = open_image(path, draft_size=8 if i % 3 == 0 else None)
        except ImageError:
            continue
        assert img.mode == "RGB"


# --- unusual files that must decode ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, fmt, expected",
    [
        ("x.jpg", "PNG", False),
        ("x.png", "JPEG", False),
        ("x.png", "PNG", True),
        ("x.JPG", "JPEG", True),
        ("x.jpeg", "JPEG", True),
        ("x.tif", "TIFF", True),
        ("x.webp", "WEBP", True),
        ("x", "PNG", False),
    ],
)
def test_suffix_matches(name: str, fmt: str, expected: bool) -> None:
    assert suffix_matches(Path(name), fmt) is expected


def test_wrong_extension_still_decodes(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode(np.full((10, 12, 3), 200, np.uint8), "PNG"))
    img, info = open_image(path)
    assert info == ImageInfo(12, 10, "PNG", "RGB")
    assert np.asarray(img)[0, 0].tolist() == [200, 200, 200]
    assert not suffix_matches(path, info.format)


def test_rgba_transparency_becomes_grey(tmp_path: Path) -> None:
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[:, :5] = (255, 0, 0, 255)  # left half opaque red
    arr[:, 5:] = (0, 0, 255, 0)  # right half fully transparent blue
    arr[0, 0] = (0, 0, 0, 128)  # one half-transparent black pixel
    path = save(Image.fromarray(arr, "RGBA"), tmp_path / "rgba.png")
    img, info = open_image(path)
    out = np.asarray(img)
    assert img.mode == "RGB" and info.mode == "RGBA"
    assert out[5, 2].tolist() == [255, 0, 0]
    assert out[5, 7].tolist() == GREY  # not black, and not the hidden blue
    assert out[0, 0].tolist() == [64, 64, 64]  # half black over grey


def test_la_transparency_becomes_grey(tmp_path: Path) -> None:
    arr = np.zeros((10, 10, 2), np.uint8)
    arr[:, :5] = (255, 255)  # opaque white
    arr[:, 5:] = (0, 0)  # transparent black
    path = save(Image.fromarray(arr, "LA"), tmp_path / "la.png")
    img, info = open_image(path)
    out = np.asarray(img)
    assert info.mode == "LA"
    assert out[5, 2].tolist() == [255, 255, 255]
    assert out[5, 7].tolist() == GREY


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparency_becomes_grey(tmp_path: Path, suffix: str) -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # 0: red (transparent), 1: green
    img.putpixel((0, 0), 1)
    path = save(img, tmp_path / f"p{suffix}", transparency=0)
    rgb, info = open_image(path)
    out = np.asarray(rgb)
    assert info.mode == "P" and rgb.mode == "RGB"
    assert out[0, 0].tolist() == [0, 255, 0]
    assert out[5, 5].tolist() == GREY  # the transparent index, not its red palette colour


def test_cmyk_jpeg(tmp_path: Path) -> None:
    img = Image.new("CMYK", (30, 20), (0, 0, 0, 0))  # no ink: white
    img.paste((255, 0, 0, 0), (0, 0, 15, 20))  # full cyan on the left
    path = save(img, tmp_path / "cmyk.jpg", quality=95)
    rgb, info = open_image(path)
    out = np.asarray(rgb).astype(int)
    assert info == ImageInfo(30, 20, "JPEG", "CMYK")
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    assert np.abs(out[10, 25] - [255, 255, 255]).max() < 10
    assert np.abs(out[10, 3] - [0, 255, 255]).max() < 10  # cyan, not inverted to red


@pytest.mark.parametrize("top", [65535, 1000])  # full range, and a dim image
def test_16bit_grayscale_is_stretched(tmp_path: Path, top: int) -> None:
    arr = np.linspace(0, top, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = save(Image.fromarray(arr), tmp_path / "g16.png")
    img, info = open_image(path)
    out = np.asarray(img)
    assert info.mode.startswith("I")
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[-1, -1].tolist() == [255, 255, 255]
    # A plain convert would clip everything above 255 to white; stretched, the mean is mid.
    assert 120 < out.mean() < 135
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # order kept


def test_16bit_flat_image_does_not_divide_by_zero(tmp_path: Path) -> None:
    path = save(Image.fromarray(np.full((8, 8), 300, np.uint16)), tmp_path / "flat16.png")
    img, _ = open_image(path)
    assert np.asarray(img).max() == 0


@pytest.mark.parametrize("mode, value, expected", [("1", 1, 255), ("1", 0, 0), ("L", 77, 77)])
def test_bilevel_and_grayscale(tmp_path: Path, mode: str, value: int, expected: int) -> None:
    path = save(Image.new(mode, (9, 7), value), tmp_path / "g.png")
    img, info = open_image(path)
    assert info.mode == mode and img.mode == "RGB" and img.size == (9, 7)
    assert np.asarray(img)[3, 3].tolist() == [expected] * 3


@pytest.mark.parametrize(
    "orientation, size, marker",
    [
        (1, (40, 20), (0, 0)),  # as stored
        (3, (40, 20), (39, 19)),  # upside down: top-left ends bottom-right
        (6, (20, 40), (19, 0)),  # turn clockwise: top-left ends top-right
        (8, (20, 40), (0, 39)),  # turn anticlockwise: top-left ends bottom-left
    ],
)
def test_exif_orientation(
    tmp_path: Path, orientation: int, size: tuple[int, int], marker: tuple[int, int]
) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 8, 8))  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(img, tmp_path / "rotated.jpg", exif=exif, quality=95)
    rgb, info = open_image(path)
    assert (info.width, info.height) == (40, 20)  # as stored in the file
    assert rgb.size == size
    red = np.asarray(rgb)[marker[1], marker[0]].astype(int)
    assert red[0] > 200 and red[1:].max() < 60


@pytest.mark.parametrize(
    "fmt, suffix",
    [
        pytest.param(
            "WEBP",
            ".webp",
            marks=pytest.mark.skipif(not features.check("webp"), reason="no WEBP support"),
        ),
        ("GIF", ".gif"),
        ("BMP", ".bmp"),
        ("TIFF", ".tif"),
    ],
)
def test_other_formats_decode(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    path.write_bytes(encode(np.full((12, 10, 3), (10, 200, 30), np.uint8), fmt, **kwargs))
    img, info = open_image(path)
    assert info == ImageInfo(10, 12, fmt, "P" if fmt == "GIF" else "RGB")
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img)[6, 5].astype(int) - [10, 200, 30]).max() <= 3


# --- sizes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2000x1500 photo-sized JPEG with a smooth gradient (so a draft decode is comparable)."""
    x = np.linspace(0, 255, 2000)
    y = np.linspace(0, 255, 1500)
    arr = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 128.0), -1).astype(np.uint8)
    return save(Image.fromarray(arr), tmp_path_factory.mktemp("big") / "big.jpg", quality=90)


def test_draft_decode_reports_original_size(large_jpeg: Path) -> None:
    img, info = open_image(large_jpeg, draft_size=64)
    assert (info.width, info.height) == (2000, 1500)
    # The decoder scaled down by 8x but no further than the requested size.
    assert img.size == (250, 188)


def test_load_array_from_large_jpeg(large_jpeg: Path) -> None:
    arr = load_array(large_jpeg, 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    full, _ = open_image(large_jpeg)
    # The draft decode must give (nearly) the same picture as a full decode.
    assert np.abs(arr.astype(int) - resize_square(full, 64).astype(int)).mean() < 3


@pytest.mark.parametrize("size", [1, 32, 224])
def test_resize_square(size: int) -> None:
    img = Image.fromarray(noise(50, 80))  # not square: squashed, not cropped
    arr = resize_square(img, size)
    assert arr.shape == (size, size, 3) and arr.dtype == np.uint8


@pytest.mark.parametrize("size", [32, 224])
def test_resize_square_squashes_instead_of_cropping(size: int) -> None:
    """A wide picture keeps its edges: a red band on the left tenth and a blue band along
    the bottom tenth stay a tenth of the square (a centre crop would cut the red one off)."""
    arr = np.full((50, 100, 3), 128, np.uint8)
    arr[:, :10] = [255, 0, 0]
    arr[45:, 10:] = [0, 0, 255]
    out = resize_square(Image.fromarray(arr), size).astype(int)
    tenth = size // 10
    left, bottom, middle = (
        out[: -tenth - 2, : tenth - 2],
        out[-tenth + 2 :, tenth + 2 :],
        out[size // 3 : 2 * size // 3, size // 3 : 2 * size // 3],
    )
    assert np.abs(left - [255, 0, 0]).max() < 40
    assert np.abs(bottom - [0, 0, 255]).max() < 40
    assert np.abs(middle - 128).max() < 10


def test_resize_square_keeps_colour() -> None:
    img = Image.new("RGB", (30, 10), (12, 34, 56))
    assert np.all(resize_square(img, 16) == [12, 34, 56])
