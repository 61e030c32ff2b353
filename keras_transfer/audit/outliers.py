"""Outliers: images unlike the rest of the folder, in feature space.

cleanlab's `OutOfDistribution` scores each image by its average cosine
distance to its nearest neighbours among the folder's pooled backbone
features (scikit-learn's `NearestNeighbors`, cleanlab's default number of
neighbours), mapped to [0, 1]: the lower, the less the image looks like any
other. A photo of something that belongs to no class (a person, a street, a
drawing) sits far from every class. The images flagged are those whose
score falls below the lower fence of the scores' box plot (Tukey's rule:
first quartile minus `FENCE` times the interquartile range), a threshold that
follows the spread of the folder's own scores.
"""

import dataclasses

import numpy as np

# Tukey's fence factor: how many interquartile ranges below the first
# quartile a score must fall to be an outlier.
FENCE = 1.5


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


def find_outliers(features, paths, labels, class_names):
    """The images below the lower fence of the scores, most unusual first.

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

    Returns:
        A list of `Outlier`, ordered by score, lowest first.
    """
    scores = outlier_scores(features)
    q1, q3 = np.percentile(scores, [25, 75])
    fence = q1 - FENCE * (q3 - q1)
    order = [i for i in np.argsort(scores, kind="stable") if scores[i] < fence]
    return [Outlier(str(paths[i]), class_names[labels[i]], float(scores[i])) for i in order]
