"""`keras_transfer.data.images.decode_image_file`: photos as people have them.

Every image file a model sees goes through this decoder (training, the
scan's decode check, `predict`, `evaluate`), so its tests are the contract:
EXIF orientation as `PIL.ImageOps.exif_transpose` applies it, formats found
by content, scaled JPEG decoding with an antialiased resize, the `resize`
modes, and a short reason for each file it cannot read.
"""

import builtins
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL import ImageOps
from PIL import JpegImagePlugin

from keras_transfer.data import images
from keras_transfer.data.images import ImageDecodeError
from keras_transfer.data.images import decode_image_file
from keras_transfer.data.images import read_image
from keras_transfer.errors import ConfigurationError


def _pixels(height=24, width=36, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _photo(height=48, width=64):
    """Smooth, asymmetric content: JPEG keeps it, any wrong turn changes it."""
    y, x = np.indices((height, width)) / max(height, width)
    pixels = np.stack([255 * x, 255 * y, 255 * (x * y) ** 0.5], axis=-1)
    pixels[: height // 4, : width // 3] = (250, 30, 30)  # a block in one corner
    return pixels.astype(np.uint8)


def _reference(path, size):
    """What a viewer shows, resized as the decoder resizes (stretch)."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(upright.resize(size[::-1], Image.Resampling.BILINEAR))


# --- orientation -----------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(tmp_path, orientation):
    path = tmp_path / f"turned_{orientation}.png"
    Image.fromarray(_pixels()).save(path, exif=_exif(orientation))
    # A non-square target: a turn that is not applied gives the wrong shape
    # before the resize, hence other pixels.
    got = decode_image_file(path, (18, 12), resize="stretch")
    np.testing.assert_array_equal(got, _reference(path, (18, 12)))


@pytest.mark.parametrize("orientation", (3, 6, 8))
def test_exif_orientation_of_jpegs_as_phones_write_them(tmp_path, orientation):
    path = tmp_path / "phone.jpg"
    Image.fromarray(_photo()).save(path, exif=_exif(orientation), quality=95)
    # Drafted at 1/2 scale by the decoder, fully decoded for the reference.
    got = decode_image_file(path, (32, 24), resize="stretch").astype(int)
    assert np.abs(got - _reference(path, (32, 24))).mean() < 2.0


def test_corrupt_exif_is_ignored_and_reported(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    corrupt = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01\x12garbage"
    Image.fromarray(_pixels()).save(path, exif=corrupt)
    pixels, problem = read_image(path, (12, 18))
    assert pixels.shape == (12, 18, 3)
    assert "corrupt EXIF" in problem


# --- formats, by content -------------------------------------------------------


@pytest.mark.parametrize(
    "name, save_kwargs",
    [
        ("a.webp", {"lossless": True}),
        ("a.tif", {}),
        ("a.png", {}),
        ("a.bmp", {}),
        ("really_a_png.jpg", {"format": "PNG"}),
        ("no_extension", {"format": "PNG"}),
    ],
)
def test_lossless_formats_decode_to_the_same_pixels(tmp_path, name, save_kwargs):
    source = _pixels()
    Image.fromarray(source).save(tmp_path / name, **save_kwargs)
    got = decode_image_file(tmp_path / name, (24, 36))
    np.testing.assert_array_equal(got, source)


def test_multipage_tiff_gives_its_first_page(tmp_path):
    first, second = _pixels(seed=1), _pixels(seed=2)
    Image.fromarray(first).save(
        tmp_path / "pages.tiff", save_all=True, append_images=[Image.fromarray(second)]
    )
    np.testing.assert_array_equal(decode_image_file(tmp_path / "pages.tiff", (24, 36)), first)


@pytest.mark.parametrize("suffix", (".png", ".tif"))
def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path, suffix):
    values = np.linspace(0, 65535, 24 * 36).reshape(24, 36).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / f"deep{suffix}")
    got = decode_image_file(tmp_path / f"deep{suffix}", (24, 36))
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(got, np.stack([expected] * 3, axis=-1))


def test_16_bit_rgb_tiff_keeps_its_range(tmp_path):
    # Pillow writes no 48-bit RGB; this TIFF is written by hand: 2x2 pixels
    # of 16-bit samples, little-endian, uncompressed.
    samples = np.array([[[65535, 0, 0], [0, 65535, 0]], [[0, 0, 65535], [32896, 32896, 32896]]])
    data = samples.astype("<u2").tobytes()
    entries = [
        (256, 3, 1, 2), (257, 3, 1, 2), (258, 3, 3, 0), (259, 3, 1, 1),
        (262, 3, 1, 2), (273, 4, 1, 0), (277, 3, 1, 3), (278, 3, 1, 2),
        (279, 4, 1, len(data)), (284, 3, 1, 1),
    ]  # fmt: skip
    ifd_offset = 8
    bits_offset = ifd_offset + 2 + 12 * len(entries) + 4
    data_offset = bits_offset + 6
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_offset, 273: data_offset}.get(tag, value)
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    tiff = b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + b"\x00" * 4
    tiff += struct.pack("<3H", 16, 16, 16) + data
    (tmp_path / "deep.tif").write_bytes(tiff)
    got = decode_image_file(tmp_path / "deep.tif", (2, 2))
    np.testing.assert_array_equal(got, [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [128, 128, 128]]])


def test_heic_decodes_with_pillow_heif(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    source = np.zeros((64, 64, 3), np.uint8)
    source[:, 32:] = (200, 40, 40)
    pillow_heif.from_bytes(mode="RGB", size=(64, 64), data=source.tobytes()).save(
        tmp_path / "IMG_0001.HEIC", quality=95
    )
    got = decode_image_file(tmp_path / "IMG_0001.HEIC", (8, 8)).astype(int)
    assert np.abs(got[:, :3] - 0).max() < 12
    assert np.abs(got[:, 5:] - (200, 40, 40)).max() < 12


def test_heic_without_pillow_heif_names_the_install(tmp_path, monkeypatch):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    (tmp_path / "IMG_0002.HEIC").write_bytes(heic)
    real_import = builtins.__import__

    def no_pillow_heif(name, *args, **kwargs):
        if name == "pillow_heif":
            raise ImportError("No module named 'pillow_heif'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pillow_heif)
    monkeypatch.setattr(images, "_heif_registered", None)
    # Pillow forgets the opener pillow-heif registered, as in a fresh process.
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if "HEI" not in k})
    monkeypatch.setattr(Image, "ID", [k for k in Image.ID if "HEI" not in k])
    with pytest.raises(ImageDecodeError, match=r"pip install keras-transfer\[heif\]"):
        decode_image_file(tmp_path / "IMG_0002.HEIC", (8, 8))


# --- colour modes ------------------------------------------------------------


def test_cmyk_and_grayscale_jpegs_become_rgb(tmp_path):
    source = Image.fromarray(_pixels())
    source.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    source.convert("L").save(tmp_path / "gray.jpg", quality=95)
    cmyk = decode_image_file(tmp_path / "cmyk.jpg", (24, 36)).astype(int)
    assert np.abs(cmyk - np.asarray(source)).mean() < 12
    gray = decode_image_file(tmp_path / "gray.jpg", (24, 36))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_transparent_palette_png_is_composited_on_white(tmp_path):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    image.paste(1, (5, 0, 10, 10))  # right half: palette entry 1, opaque red
    image.info["transparency"] = 0  # left half: entry 0, transparent blue
    image.save(tmp_path / "palette.png", transparency=0)
    got = decode_image_file(tmp_path / "palette.png", (10, 10))
    np.testing.assert_array_equal(got[:, :5], np.full((10, 5, 3), 255))
    np.testing.assert_array_equal(got[:, 5:], np.broadcast_to([255, 0, 0], (10, 5, 3)))


# --- scaled decoding and antialiasing ------------------------------------------------


def test_big_jpegs_are_decoded_at_the_smallest_scale_covering_the_size(tmp_path, monkeypatch):
    Image.fromarray(_pixels(800, 1000)).save(tmp_path / "big.jpg")
    scales = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        stored = self.size
        result = draft(self, mode, size)
        scales.append(stored[0] // self.size[0])
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    assert decode_image_file(tmp_path / "big.jpg", (100, 120)).shape == (100, 120, 3)
    assert decode_image_file(tmp_path / "big.jpg", (300, 300)).shape == (300, 300, 3)
    # 1000x800 to 120x100: 1/8 scale (125x100); to 300x300: 1/2 (500x400).
    assert scales == [8, 2]


def test_downscaling_is_antialiased(tmp_path):
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::3] = 255  # one stripe in three: a mean of 85 at any coarser scale
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    got = decode_image_file(tmp_path / "stripes.png", (50, 50)).astype(int)
    # Bilinear sampling without antialiasing (tf.image.resize's default)
    # reads two neighbouring columns out of eight: 0, 127 or 255 here.
    assert np.abs(got[:, 1:-1] - 85).max() <= 2


# --- resize modes ------------------------------------------------------------


def _bands(tmp_path):
    """40 wide, 20 high: a blue, a green (a bit over the middle half) and a red band."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :8] = (0, 0, 255)
    pixels[:, 8:32] = (0, 255, 0)
    pixels[:, 32:] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    return tmp_path / "wide.png"


def test_crop_keeps_the_centre(tmp_path):
    got = decode_image_file(_bands(tmp_path), (10, 10), resize="crop")
    np.testing.assert_array_equal(got, np.broadcast_to([0, 255, 0], (10, 10, 3)))


def test_pad_letterboxes_the_whole_image(tmp_path):
    got = decode_image_file(_bands(tmp_path), (20, 20), resize="pad")
    np.testing.assert_array_equal(got[:5], 0)
    np.testing.assert_array_equal(got[15:], 0)
    middle = got[5:15]
    assert (middle[:, 0] == (0, 0, 255)).all() and (middle[:, -1] == (255, 0, 0)).all()


def test_stretch_keeps_everything_and_fills_the_square(tmp_path):
    got = decode_image_file(_bands(tmp_path), (20, 20), resize="stretch")
    assert (got[:, 0] == (0, 0, 255)).all() and (got[:, -1] == (255, 0, 0)).all()
    assert (got[0, 10] == (0, 255, 0)).all()


def test_crop_of_a_turned_jpeg_covers_the_size(tmp_path):
    # Stored 64 wide, 48 high, orientation 6: upright it is 48 wide, 64 high.
    Image.fromarray(_pixels(48, 64)).save(tmp_path / "turned.jpg", exif=_exif(6))
    assert decode_image_file(tmp_path / "turned.jpg", (40, 30), resize="crop").shape == (
        40, 30, 3,
    )  # fmt: skip


def test_unknown_resize_is_refused():
    with pytest.raises(ConfigurationError, match="'stretch', 'crop', 'pad'"):
        images.check_resize("squash")


# --- files that cannot be decoded -------------------------------------------------


def _bomb_png(path, side=20_000):
    """A valid 1-bit PNG of side x side pixels, a few hundred kB compressed."""
    row = b"\x00" + b"\x00" * (side // 8)

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("shopping list"), "not an image"),
        (lambda p: p.write_bytes(_jpeg_bytes()[:300]), "truncated"),
        (lambda p: _bomb_png(p), "too large"),
    ],
    ids=["zero bytes", "text named .jpg", "truncated jpeg", "20000x20000 png"],
)
def test_undecodable_files_raise_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image_file(path, (8, 8))


def _jpeg_bytes():
    buffer = io.BytesIO()
    Image.fromarray(_pixels(64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("resize", ("crop", "pad"))
@pytest.mark.parametrize("stored", [(500, 333), (333, 500), (97, 61), (1, 7), (640, 640)])
def test_crop_and_pad_of_awkward_sizes_give_the_size(tmp_path, stored, resize):
    # 500x333 to 160: the centred box's float edges once fell just outside the image.
    Image.new("RGB", stored, (10, 200, 30)).save(tmp_path / "a.png")
    for size in ((160, 160), (96, 128), (7, 3)):
        got = decode_image_file(tmp_path / "a.png", size, resize=resize)
        assert got.shape == (*size, 3)
