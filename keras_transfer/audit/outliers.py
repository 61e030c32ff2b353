"""Outliers: images unlike the rest of the folder, in feature space.

cleanlab's `OutOfDistribution` scores each image by its average cosine
distance to its nearest neighbours among the folder's pooled backbone
features (scikit-learn's `NearestNeighbors`, cleanlab's default number of
neighbours), mapped to [0, 1]: the lower, the less the image looks like any
other. A photo of something that belongs to no class (a person, a street, a
drawing) sits far from every class.

The scores rank the images; they have no threshold that separates
"unusual" from "wrong". On the shared flowers no score falls below the lower
fence of the box plot (Tukey's rule, on the scores or their logarithm), yet
the lowest-scored photos are a dog, a "Roses" shop sign, a cat and a
tortoise (docs/audit.md). So the audit lists the `OUTLIER_FRACTION` of the
images with the lowest scores, at least one, most unusual first: a list to
look through, whose top holds the photos that belong to no class.
"""

import dataclasses

import numpy as np

from keras_transfer import defaults

# The fraction of the images listed as outliers: 25 of the 2,500 flowers.
OUTLIER_FRACTION = defaults.OUTLIER_FRACTION


@dataclasses.dataclass(frozen=True)
class Outlier:
    """An image unlike the other images of the folder.

    Attributes:
        path: the image file.
        given: its class.
        score: cleanlab's out-of-distribution score in [0, 1]; the lower,
            the more unusual.
    """

    path: str
    given: str
    score: float


def outlier_scores(features):
    """cleanlab's nearest-neighbour out-of-distribution score of each image.

    Example:

    ```python
    scores = outlier_scores(features)  # (N,), in [0, 1], low: unusual
    ```
    """
    from cleanlab.outlier import OutOfDistribution

    x = np.asarray(features, dtype=np.float32)
    return OutOfDistribution().fit_score(features=x - x.mean(axis=0), verbose=False)


def find_outliers(features, paths, labels, class_names, fraction=OUTLIER_FRACTION):
    """The `fraction` of the images with the lowest scores, most unusual first.

    Example:

    ```python
    for outlier in find_outliers(features, paths, labels, ["cats", "dogs"]):
        print(outlier.path, outlier.score)
    ```

    Args:
        features: `(N, D)` features.
        paths: the `N` image files.
        labels: `(N,)` class indices.
        class_names: the class names, in label order.
        fraction: the fraction of the images listed (at least one).

    Returns:
        A list of `Outlier`, ordered by score, lowest first.
    """
    scores = outlier_scores(features)
    count = max(1, round(fraction * len(scores)))
    order = np.argsort(scores, kind="stable")[:count]
    return [Outlier(str(paths[i]), class_names[labels[i]], float(scores[i])) for i in order]
