"""`decode_image_file`: the one decoder every image file goes through.

Training, validation, `evaluate`, `predict`, `compare`, the tuner's data and
the folder scan's decode check all read pixels here, so a model sees at
prediction time exactly the pixels it was trained on. A file becomes a
`uint8` `(height, width, 3)` RGB array:

- the format is found from the file's content, not its name (a `.jpg` that
  is a PNG loads); JPEG, PNG (8 and 16 bit), WebP, TIFF (8 and 16 bit, the
  first page), BMP, GIF (the first frame), and HEIC/HEIF when `pillow-heif`
  is installed (`pip install keras-transfer[heif]`);
- the EXIF orientation is applied (all eight values), as every photo viewer
  does; a corrupt EXIF block is ignored and reported (`exif_problem`);
- a JPEG is decoded at the smallest DCT scale (1/8, 1/4, 1/2) that still
  covers the target size, so a 12 MP photo costs little more than a small
  one, then every image is resized with Pillow's antialiased bilinear
  filter (each output pixel averages the input pixels it covers);
- 16-bit images are scaled to 8 bits, transparency is composited on white
  (what viewers show), CMYK, grayscale and palette images become RGB;
- `resize` keeps or drops the aspect ratio: `stretch` (to the size, as
  Keras does), `crop` (the shorter side to the size, then the centre: the
  ImageNet evaluation transform) or `pad` (the whole image, letterboxed on
  black).

Files that cannot be decoded raise `ImageDecodeError` with a short reason
(empty, truncated, not an image, too large, HEIC without pillow-heif).
Pillow releases the GIL while it decodes and resizes, so `tf.data` runs
this in parallel through `tf.numpy_function` (`loading.image_dataset`).
"""

import os
import struct
import warnings

import numpy as np
from PIL import Image

from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError

RESIZE_MODES = defaults.RESIZE_MODES

# What the alpha channel of a transparent image is composited on, and what
# `pad` fills around the image (RGB).
TRANSPARENT_BACKGROUND = (255, 255, 255)
PAD_FILL = (0, 0, 0)

HEIF_INSTALL = "pip install keras-transfer[heif]"

# HEIF's `ftyp` brands (ISO/IEC 23008-12): the file's bytes 8-12.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif")

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the image upright, as in
# `PIL.ImageOps.exif_transpose`.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_heif_registered = None


class ImageDecodeError(DataError):
    """An image file cannot be decoded; the message is the reason, in a few words."""


def check_resize(resize):
    """`resize` if it is one of `RESIZE_MODES`; raises a `ConfigurationError` naming them.

    Example:

    ```python
    check_resize("crop")  # 'crop'
    ```
    """
    if resize not in RESIZE_MODES:
        raise ConfigurationError(
            f"Unrecognized value for resize: {resize!r}. Expected one of "
            f"{', '.join(map(repr, RESIZE_MODES))}: 'stretch' resizes to the size "
            "(the aspect ratio is lost), 'crop' keeps the centre, 'pad' letterboxes."
        )
    return resize


def decode_image_file(path, size, resize=defaults.RESIZE):
    """Decodes an image file to `uint8` RGB pixels of `size`, upright.

    See the module docstring for what is done to the pixels.

    Example:

    ```python
    pixels = decode_image_file("photos/roses/IMG_0042.HEIC", (224, 224), resize="crop")
    pixels.shape, pixels.dtype  # ((224, 224, 3), dtype('uint8'))
    ```

    Args:
        path: the image file (str, bytes or path-like).
        size: `(height, width)` of the result.
        resize: `"stretch"`, `"crop"` or `"pad"` (see the module docstring).
            Defaults to `defaults.RESIZE`.

    Returns:
        A `uint8` NumPy array of shape `(height, width, 3)`.

    Raises:
        ImageDecodeError: the file cannot be decoded; the message says why.
    """
    return read_image(path, size, resize)[0]


def read_image(path, size, resize=defaults.RESIZE):
    """`decode_image_file`, also returning what was wrong with the file's EXIF.

    Example:

    ```python
    pixels, exif_problem = read_image("photo.jpg", (160, 160))
    exif_problem  # None, or e.g. 'corrupt EXIF block, ignored (orientation not applied)'
    ```

    Args:
        path, size, resize: as for `decode_image_file`.

    Returns:
        `(pixels, exif_problem)`: `exif_problem` is None, or why the EXIF
        block was ignored (the pixels are then as stored).

    Raises:
        ImageDecodeError: as `decode_image_file`.
    """
    path = os.fsdecode(path)
    height, width = size
    try:
        with Image.open(path) as image:
            orientation, exif_problem = _orientation(image)
            turned = orientation in (5, 6, 7, 8)
            if image.format in ("JPEG", "MPO"):  # MPO: JPEGs of some cameras
                # Stored sideways: the target's sides swap before the transpose.
                target = (height, width) if turned else (width, height)
                image.draft("RGB", _decoded_size(image.size, target, resize))
            image.load()
            if orientation in _TRANSPOSE:
                image = image.transpose(_TRANSPOSE[orientation])
            pixels = _resized(_to_rgb(image), (width, height), resize)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(_too_large(e)) from None
    except FileNotFoundError:
        raise ImageDecodeError("no such file") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(_unidentified(path)) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        raise ImageDecodeError(_reason(e)) from None
    return np.asarray(pixels, dtype=np.uint8), exif_problem


def register_heif_opener():
    """Lets Pillow open HEIC/HEIF files if `pillow-heif` is installed; True if it is.

    Called before the first decode; safe to call again.

    Example:

    ```python
    register_heif_opener()  # False without pip install keras-transfer[heif]
    ```
    """
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
        except ImportError:
            _heif_registered = False
        else:
            pillow_heif.register_heif_opener()
            _heif_registered = True
    return _heif_registered


def _decoded_size(stored, target, resize):
    """The smallest `(width, height)` JPEG draft that still covers `target` after `resize`."""
    (w, h), (tw, th) = stored, target
    if resize == "stretch":
        return tw, th
    # crop scales the shorter side to the target, pad the longer one.
    scale = max(tw / w, th / h) if resize == "crop" else min(tw / w, th / h)
    return max(1, int(np.ceil(w * scale))), max(1, int(np.ceil(h * scale)))


def _to_rgb(image):
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG, TIFF): Pillow's convert would clip at 255.
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, TRANSPARENT_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _resized(image, size, resize):
    """`image` resized to `size` `(width, height)`; antialiased when shrinking."""
    (w, h), (tw, th) = image.size, size
    if resize == "stretch":
        return image.resize(size, Image.Resampling.BILINEAR)
    if resize == "crop":
        # The largest centred box of the target's aspect ratio, scaled in one pass.
        scale = max(tw / w, th / h)
        bw, bh = min(w, tw / scale), min(h, th / scale)  # min: rounding
        box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
        return image.resize(size, Image.Resampling.BILINEAR, box=box)
    scale = min(tw / w, th / h)
    fw, fh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
    canvas = Image.new("RGB", size, PAD_FILL)
    canvas.paste(
        image.resize((fw, fh), Image.Resampling.BILINEAR), ((tw - fw) // 2, (th - fh) // 2)
    )
    return canvas


def _orientation(image):
    """`(orientation 1-8, problem or None)` from the image's EXIF, without warnings."""
    data = image.info.get("exif")
    if data is None:
        # TIFF keeps the tag among its own; no EXIF block, no orientation.
        tags = getattr(image, "tag_v2", None)
        value = tags.get(_ORIENTATION_TAG, 1) if tags is not None else 1
        return (value, None) if value in range(1, 9) else (1, _bad_orientation(value))
    try:
        value = _parse_orientation(bytes(data))
    except (struct.error, ValueError, IndexError):
        return 1, "corrupt EXIF block, ignored (orientation not applied)"
    if value not in range(1, 9):
        return 1, _bad_orientation(value)
    return value, None


def _bad_orientation(value):
    return f"EXIF orientation {value} is not 1-8, ignored"


def _parse_orientation(data):
    """The orientation tag of IFD0 of an EXIF block (TIFF layout); 1 when absent.

    Parsed here rather than by `Image.getexif`, which warns from inside
    Pillow (once, naming no file) and returns nothing for a corrupt block.
    """
    if data.startswith(b"Exif\x00\x00"):
        data = data[6:]
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or struct.unpack(order + "H", data[2:4])[0] != 42:
        raise ValueError("not a TIFF header")
    offset = struct.unpack(order + "I", data[4:8])[0]
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    for index in range(count):
        start = offset + 2 + 12 * index
        tag, kind, _ = struct.unpack(order + "HHI", data[start : start + 8])
        if tag == _ORIENTATION_TAG:
            if kind != 3:  # SHORT
                raise ValueError("orientation is not a SHORT")
            return struct.unpack(order + "H", data[start + 8 : start + 10])[0]
    return 1


def _head(path, size=16):
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _is_heif(head):
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _unidentified(path):
    head = _head(path)
    if not head:
        return "empty file (0 bytes)"
    if _is_heif(head) and not register_heif_opener():
        return f"HEIC/HEIF image, which needs pillow-heif: {HEIF_INSTALL}"
    return f"not an image Pillow can read (the file starts with {head[:8]!r})"


def _reason(error):
    message = " ".join(str(error).split()) or type(error).__name__
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return f"truncated or corrupt ({message})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return f"cannot be decoded ({message})"


def _too_large(error):
    return (
        f"too large to decode safely ({' '.join(str(error).split())[:120]}); "
        "shrink it below 179 megapixels"
    )


# HEIC files decode once pillow-heif is registered; done at import so that
# every thread of the tf.data pipeline sees it.
register_heif_opener()

# Pillow parses a JPEG's EXIF on open (for its DPI) and warns of a corrupt
# block once per process, naming no file; the scan names each such file
# (`exif_problem`), so Pillow's anonymous duplicate is silenced, and only it.
warnings.filterwarnings(
    "ignore", message="Corrupt EXIF data", category=UserWarning, module="PIL.TiffImagePlugin"
)
