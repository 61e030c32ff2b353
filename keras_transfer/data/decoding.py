"""Which image files the pipeline can decode, checked once per file version.

`scan_image_folder` leaves out the files this module finds undecodable
(empty, truncated or corrupt files, text files named `.jpg`, HEIC without
pillow-heif, decompression bombs), so that training never stops in the
middle of an epoch, and notes the files whose EXIF block is corrupt (they
load, not turned). Every file is decoded once, by the decoder the `tf.data`
pipeline uses (`images.read_image`), at a tiny size: a JPEG's whole
entropy-coded stream is still read (truncation fails as in a full decode)
while its inverse DCT runs at 1/8 scale. The result is remembered per file
(path, size, modification time), so checking the same folder again in one
process costs a `stat` per file.
"""

import concurrent.futures
import dataclasses
import os

from keras_transfer.data.images import ImageDecodeError
from keras_transfer.data.images import read_image

# (real path, size, mtime_ns) -> FileCheck.
_DECODE_CHECKS = {}

# The size the check decodes to: the smallest a JPEG's DCT scaling reaches.
_CHECK_SIZE = (8, 8)


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """What decoding one file found.

    Attributes:
        error: why the file cannot be decoded, or None when it can.
        note: a problem the file loads despite (a corrupt EXIF block), or None.
    """

    error: object = None
    note: object = None


def decode_errors(paths):
    """`{path: reason}` for the paths the pipeline cannot decode.

    Files seen before, unchanged, are not decoded again.

    Example:

    ```python
    decode_errors(["cats/a.jpg", "cats/notes.jpg"])
    # {'cats/notes.jpg': "not an image Pillow can read (the file starts with b'shopping')"}
    ```
    """
    return {path: check.error for path, check in check_files(paths).items() if check.error}


def check_files(paths):
    """`{path: FileCheck}` for every path, decoding only files not seen unchanged.

    Example:

    ```python
    checks = check_files(["cats/a.jpg", "cats/turned.jpg"])
    checks["cats/turned.jpg"].note  # 'corrupt EXIF block, ignored (...)'
    ```
    """
    results, keys, unchecked = {}, {}, []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as e:  # A dangling symlink, or a file removed meanwhile.
            results[path] = FileCheck(error=(e.strerror or str(e)).lower())
            continue
        keys[path] = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        if keys[path] not in _DECODE_CHECKS:
            unchecked.append(path)
    if unchecked:
        for path, check in check_decodable(unchecked).items():
            _DECODE_CHECKS[keys[path]] = check
    for path, key in keys.items():
        results[path] = _DECODE_CHECKS[key]
    return {path: results[path] for path in paths if path in results}


def check_decodable(paths):
    """Decodes every file once with the pipeline's decoder; `{path: FileCheck}`.

    Unlike `check_files`, this remembers nothing: every call decodes. Files
    are decoded on a thread per core (Pillow releases the GIL as it decodes).
    """
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(zip(paths, pool.map(_check, paths)))


def _check(path):
    try:
        _, note = read_image(path, _CHECK_SIZE)
    except ImageDecodeError as e:
        return FileCheck(error=str(e))
    return FileCheck(note=note)
