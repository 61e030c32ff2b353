"""Heatmaps drawn over their images: `overlay_heatmap`, `write_heatmap_overlays`.

A heatmap in [0, 1] (from `keras_transfer.explain`) is coloured with a
matplotlib colormap and blended over the image; where the map is 0 the
photo shows through almost unchanged, so what the model looked at stands
out. The files are written by Pillow.
"""

import os

import numpy as np

from keras_transfer.errors import ConfigurationError

# How much of the colour map covers the photo where the heatmap is 1.
DEFAULT_ALPHA = 0.5
DEFAULT_COLORMAP = "jet"


def overlay_heatmap(image, heatmap, alpha=DEFAULT_ALPHA, colormap=DEFAULT_COLORMAP):
    """`image` with `heatmap` blended over it, as `uint8` RGB.

    Example:

    ```python
    pixels = keras_transfer.decode_image_file("rose.jpg", (160, 160))
    heatmap = keras_transfer.explain(model, pixels[None])[0]
    PIL.Image.fromarray(overlay_heatmap(pixels, heatmap)).save("rose_heatmap.jpg")
    ```

    Args:
        image: array `(height, width, 3)`, pixels in [0, 255].
        heatmap: array `(height, width)` in [0, 1].
        alpha: the colour's weight where the heatmap is 1 (it falls with
            the heatmap, so cold regions keep the photo). Defaults to 0.5.
        colormap: a matplotlib colormap name. Defaults to `"jet"`.
    """
    import matplotlib

    image = np.asarray(image, dtype="float32")
    heatmap = np.clip(np.asarray(heatmap, dtype="float32"), 0, 1)
    if heatmap.shape != image.shape[:2]:
        raise ConfigurationError(
            f"The heatmap's shape {heatmap.shape} differs from the image's "
            f"{image.shape[:2]}: explain the image at the size it is drawn."
        )
    colours = matplotlib.colormaps[colormap](heatmap)[..., :3] * 255
    weight = (alpha * (0.3 + 0.7 * heatmap))[..., None]
    return np.clip(image * (1 - weight) + colours * weight, 0, 255).astype("uint8")


def write_heatmap_overlays(output_dir, paths, images, heatmaps, taken=()):
    """Writes each image with its heatmap over it, as `<name>.heatmap.jpg` in `output_dir`.

    Example:

    ```python
    written = write_heatmap_overlays("heatmaps", ["a/rose.jpg"], pixels, heatmaps)
    ```

    Args:
        output_dir: the folder (created if missing).
        paths: the source file of each image; the output is named after it
            (`rose.jpg` -> `rose.heatmap.jpg`; a repeated name gets `-2`, `-3`...).
        images: `(N, height, width, 3)` pixels in [0, 255].
        heatmaps: `(N, height, width)` in [0, 1].
        taken: paths already written (by an earlier call for the same
            folder), not to be overwritten.

    Returns:
        The written paths, in input order.
    """
    from PIL import Image

    os.makedirs(output_dir, exist_ok=True)
    written, taken = [], {os.path.basename(path) for path in taken}
    for path, image, heatmap in zip(paths, images, heatmaps):
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}.heatmap.jpg", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}.heatmap.jpg"
        taken.add(name)
        target = os.path.join(output_dir, name)
        Image.fromarray(overlay_heatmap(image, heatmap)).save(target, quality=92)
        written.append(target)
    return written
