"""Duplicate and near-duplicate images: by file content and by features.

Two files with the same bytes (SHA-256) are exact duplicates. Two images
whose pooled backbone features, centred on the folder's mean feature, have
a cosine similarity of at least `NEAR_DUPLICATE_THRESHOLD` are near
duplicates: the same photo resized, recompressed, slightly cropped or
mirrored (the features average each image with its mirror image). The
features are centred because those of a backbone ending in ReLU are all
positive: any two photos have a high raw cosine similarity (median 0.75
to the nearest other flower, against 0.59 centred).

Each pair says whether its images are in different classes (one of the two
labels is wrong, or the classes overlap) and whether the train/validation
split that `train` makes with the same `validation_split` and `seed` puts
one in training and the other in validation: leakage, which inflates the
validation accuracy.
"""

import collections
import dataclasses
import hashlib

import numpy as np

from keras_transfer import defaults

# Cosine similarity of centred features from which two images are near
# duplicates. On the shared flowers with the audit's default features
# (three MobileNets at 288 px, side by side; benchmarks/audit.py,
# docs/audit.md), 75 % of the copies recompressed at JPEG quality 50,
# 97.5 % of those cropped by 5 % a side and all mirrored ones reach 0.85
# against their original (copies shrunk to half size: 10 %), and 36 pairs
# of the 2,500 photos do (34 with MobileNetV2 0.5 alone at 224 px, where
# a sample of the pairs from 0.80 to 0.88 held about half shots of one
# scene).
NEAR_DUPLICATE_THRESHOLD = defaults.NEAR_DUPLICATE_THRESHOLD

# Rows of the similarity matrix computed at a time, to bound memory.
_BLOCK = 1024


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """A pair of duplicate or near-duplicate images.

    Attributes:
        path_a, path_b: the two image files.
        class_a, class_b: their classes.
        similarity: cosine similarity of their centred features (1.0 for
            exact duplicates).
        exact: whether the two files have the same bytes.
        across_classes: whether they are in different classes.
        across_split: whether `train`'s split puts one in training and the
            other in validation (leakage).
    """

    path_a: str
    path_b: str
    class_a: str
    class_b: str
    similarity: float
    exact: bool
    across_classes: bool
    across_split: bool


def find_duplicates(features, paths, labels, class_names, validation, threshold=None):
    """Exact and near-duplicate pairs; leakage across the split first.

    Example:

    ```python
    pairs = find_duplicates(features, paths, labels, ["cats", "dogs"], validation)
    [p for p in pairs if p.across_split]  # validation photos also in training
    ```

    Args:
        features: `(N, D)` features.
        paths: the `N` image files.
        labels: `(N,)` class indices.
        class_names: the class names, in label order.
        validation: `(N,)` booleans, True for images `train` validates on.
        threshold: the near-duplicate cosine similarity; None for
            `NEAR_DUPLICATE_THRESHOLD`.

    Returns:
        A list of `Duplicate`: pairs across the split first, then across
        classes, then the others, each group by decreasing similarity.
    """
    threshold = NEAR_DUPLICATE_THRESHOLD if threshold is None else float(threshold)
    exact = _same_bytes(paths)
    similar = _similar_pairs(features, threshold)
    pairs = []
    for i, j in sorted(set(similar) | exact):
        pairs.append(
            Duplicate(
                str(paths[i]),
                str(paths[j]),
                class_names[labels[i]],
                class_names[labels[j]],
                1.0 if (i, j) in exact else similar[i, j],
                (i, j) in exact,
                bool(labels[i] != labels[j]),
                bool(validation[i] != validation[j]),
            )
        )
    pairs.sort(key=lambda p: (not p.across_split, not p.across_classes, -p.similarity))
    return pairs


def _same_bytes(paths):
    """`{(i, j)}`, i < j, for files with the same SHA-256."""
    groups = collections.defaultdict(list)
    for index, path in enumerate(paths):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):  # noqa: B023 (f is current)
                digest.update(chunk)
        groups[digest.hexdigest()].append(index)
    return {
        (a, b) for group in groups.values() for k, a in enumerate(group) for b in group[k + 1 :]
    }


def _similar_pairs(features, threshold):
    """`{(i, j): similarity}`, i < j, for centred cosine similarity >= threshold."""
    x = np.asarray(features, dtype=np.float32)
    x = x - x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    found = {}
    for start in range(0, len(x), _BLOCK):
        block = x[start : start + _BLOCK] @ x.T
        rows, cols = np.nonzero(block >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                found[start + r, c] = float(block[r, c])
    return found
