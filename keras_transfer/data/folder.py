"""Scanning a folder-per-class image tree: its classes and usable images.

```
flowers/
    daisy/      100080576_f52e8ee070_n.jpg ...
    roses/      ...
```

Each subfolder is a class (sorted alphanumerically, as in
`keras.utils.image_dataset_from_directory`); its images may sit in nested
folders. The folder is checked before anything trains: a missing folder,
images not sorted into class subfolders, a single class or an empty class
raise a `DataError` that says what to change. Files the pipeline's decoder
cannot read (see `decoding.py`) are left out and named, with the reason, in
one warning; files whose corrupt EXIF block was ignored are named in another.
"""

import dataclasses
import os
import warnings

from keras_transfer.data.decoding import check_files
from keras_transfer.errors import DataError
from keras_transfer.utils.checks import plural

# The names under which image files are found in a folder: those of
# keras.utils.image_dataset_from_directory (its ALLOWLIST_FORMATS) and what
# browsers (WebP), scanners and microscopes (TIFF) and phones (HEIC/HEIF)
# save. The decoder reads a file by its content, whatever its name says.
IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".heic", ".heif", ".jfif", ".jpe", ".jpeg", ".jpg", ".png",
    ".tif", ".tiff", ".webp",
)  # fmt: skip

# Folders that archivers and notebooks leave behind; never classes.
_IGNORED_DIRS = ("__MACOSX",)

# How many skipped files a warning names before it summarises the rest.
_MAX_NAMED = 20


@dataclasses.dataclass(frozen=True)
class ImageFolderInfo:
    """What `scan_image_folder` found in a folder-per-class image tree.

    Example:

    ```python
    info = keras_transfer.data.scan_image_folder("flower_photos")
    info.num_images, info.class_counts["roses"]   # (2500, 500)
    ```

    Attributes:
        directory: the folder, as given.
        class_names: class subfolder names, sorted alphanumerically; label `i`
            is `class_names[i]`.
        files: for each class, the paths of its decodable images, sorted.
        skipped: `(path, reason)` for each image file that cannot be decoded.
        ignored: images lying directly in `directory`, outside every class
            subfolder (they are not used).
        notes: `(path, problem)` for each usable image loaded despite a
            problem (a corrupt EXIF block: not turned upright).
    """

    directory: str
    class_names: tuple
    files: dict
    skipped: tuple = ()
    ignored: tuple = ()
    notes: tuple = ()

    @property
    def class_counts(self):
        """`{class_name: number of usable images}`, in label order."""
        return {name: len(self.files[name]) for name in self.class_names}

    @property
    def num_images(self):
        """Number of usable images over all classes."""
        return sum(len(paths) for paths in self.files.values())


def scan_image_folder(directory):
    """Lists and checks the images of a folder-per-class tree.

    Each subfolder of `directory` is a class; its images may sit in nested
    folders. Files with other extensions (`.txt`, `.DS_Store`), hidden files
    and folders, and `__MACOSX` are ignored. Images the pipeline cannot
    decode are left out and named in one warning, each with its reason.

    Example:

    ```python
    info = keras_transfer.data.scan_image_folder("flower_photos")
    info.class_names   # ('daisy', 'dandelion', 'roses', 'sunflowers', 'tulips')
    info.class_counts  # {'daisy': 500, 'dandelion': 500, ...}
    ```

    Args:
        directory: path of the folder holding one subfolder per class.

    Returns:
        An `ImageFolderInfo`.

    Raises:
        DataError: the folder is missing or is not a folder, has no class
            subfolders, has a single class, or has a class without usable
            images.
    """
    info = list_image_folder(directory)
    warn_left_out(info, stacklevel=3)
    return info


def list_image_folder(directory):
    """Lists the class folders and their decodable images, without warning.

    What `scan_image_folder` does, less its warnings: for callers (such as
    `load_image_folder`) that warn with their own `stacklevel` through
    `warn_left_out`.

    Example:

    ```python
    info = list_image_folder("flower_photos")
    warn_left_out(info, stacklevel=2)
    ```

    Returns:
        An `ImageFolderInfo`.

    Raises:
        DataError: as `scan_image_folder`.
    """
    root = os.fspath(directory)
    _check_root(root)
    class_names, loose = _class_folders(root)
    candidates = {name: _list_images(os.path.join(root, name)) for name in class_names}
    empty = [name for name, paths in candidates.items() if not paths]
    if empty:
        raise DataError(
            f"Class subfolders without images in {root}: "
            f"{', '.join(repr(n) for n in empty)}. Add images "
            f"({', '.join(IMAGE_EXTENSIONS)}) to them or remove them."
        )

    checks = check_files([p for paths in candidates.values() for p in paths])
    errors = {path: check.error for path, check in checks.items() if check.error}
    notes = tuple((path, check.note) for path, check in checks.items() if check.note)
    files = {name: tuple(p for p in paths if p not in errors) for name, paths in candidates.items()}
    unreadable = [name for name, paths in files.items() if not paths]
    if unreadable:
        raise DataError(
            f"Class subfolders in {root} whose images all fail to decode: "
            f"{', '.join(repr(n) for n in unreadable)} (e.g. "
            f"{errors[candidates[unreadable[0]][0]]}). Replace them with readable "
            f"images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    skipped = tuple((path, errors[path]) for path in sorted(errors))
    return ImageFolderInfo(
        root, tuple(class_names), files, skipped, tuple(loose), tuple(sorted(notes))
    )


def _check_root(root):
    if not os.path.exists(root):
        raise DataError(
            f"Image folder not found: {root}. Pass the folder that holds one "
            "subfolder per class: DIR/<class>/<image>."
        )
    if not os.path.isdir(root):
        raise DataError(
            f"Expected a folder of images, got a file: {root}. Pass the folder "
            "that holds one subfolder per class: DIR/<class>/<image>."
        )


def _class_folders(root):
    """`(class_names, loose_images)` of `root`, sorted; at least two classes."""
    class_names, loose = [], []
    for entry in os.scandir(root):
        if _ignored(entry.name):
            continue
        if entry.is_dir():
            class_names.append(entry.name)
        elif _is_image_name(entry.name):
            loose.append(entry.path)
    class_names.sort()
    loose.sort()

    if not class_names:
        if loose:
            found = f"{plural(len(loose), 'image')} directly in it"
        else:
            found = "no subfolders"
        raise DataError(
            f"No class subfolders in {root} ({found}). Put each class in its own "
            f"subfolder: {os.path.join(root, '<class>', '<image>')}."
        )
    if len(class_names) == 1:
        raise DataError(
            f"Found a single class subfolder in {root}: {class_names[0]!r}. A "
            "classifier needs at least two classes, each in its own subfolder: "
            f"{os.path.join(root, '<class>', '<image>')}."
        )
    return class_names, loose


def _ignored(name):
    return name.startswith(".") or name in _IGNORED_DIRS


def _is_image_name(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(folder):
    # Like Keras: nested folders belong to their class; symlinked files are
    # followed, symlinked folders inside a class are not (no cycles).
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _ignored(d)]
        paths.extend(os.path.join(dirpath, f) for f in filenames if _is_image_name(f))
    return sorted(paths)


def warn_left_out(info, stacklevel):
    """Warns about the undecodable, the loose and the noted images of `info`, one warning each.

    Example:

    ```python
    warn_left_out(list_image_folder("flower_photos"), stacklevel=2)
    ```

    Args:
        info: an `ImageFolderInfo`.
        stacklevel: as for `warnings.warn`, counted from this function, so
            that the warning points at the user's call.
    """
    root = info.directory
    if info.skipped:
        named = "; ".join(
            f"{os.path.relpath(path, root)} ({reason})"
            for path, reason in info.skipped[:_MAX_NAMED]
        )
        warnings.warn(
            f"Skipping {plural(len(info.skipped), 'image file')} in {root} that "
            "cannot be decoded: "
            f"{named}{_and_more(info.skipped, '; ')}. Fix, re-save or delete them "
            "to silence this warning.",
            stacklevel=stacklevel,
        )
    if info.notes:
        named = "; ".join(
            f"{os.path.relpath(path, root)} ({note})" for path, note in info.notes[:_MAX_NAMED]
        )
        warnings.warn(
            f"Loading {plural(len(info.notes), 'image')} in {root} as stored, not "
            f"turned upright: {named}{_and_more(info.notes, '; ')}. Re-save them "
            "upright to silence this warning.",
            stacklevel=stacklevel,
        )
    if info.ignored:
        named = ", ".join(os.path.basename(p) for p in info.ignored[:_MAX_NAMED])
        warnings.warn(
            f"Ignoring {plural(len(info.ignored), 'image')} directly in {root} "
            f"({named}{_and_more(info.ignored, ', ')}): images are only used inside "
            f"a class subfolder, {os.path.join(root, '<class>', '<image>')}.",
            stacklevel=stacklevel,
        )


def _and_more(items, separator):
    more = len(items) - _MAX_NAMED
    return f"{separator}and {more} more" if more > 0 else ""
