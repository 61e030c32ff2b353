"""Likely label errors: confident learning on out-of-fold probabilities.

A classifier that has not seen an image gives the image's given label a low
probability when the label is wrong. Here the classifier is a logistic
regression on the frozen backbone features (L2-normalised; several
backbones' features side by side, see `features.concatenate_features`),
trained K times, each time on all folds but the image's own
(scikit-learn's `StratifiedKFold`); its regularisation strength is the one
of `C_GRID` with the lowest out-of-fold log loss on the given labels (no
knowledge of which labels are wrong is used).

The wrong labels themselves pull that classifier towards them, so it runs
twice: the second round weighs each training image by the square root of
the out-of-fold probability that the first round gave its label, and the
likely mislabelled images teach it little (the idea of confident learning's
pruning, kept soft: a hard cut of the images cleanlab flags ranked worse);
its `C` is picked again, by the log loss weighted alike.

cleanlab, the field's library, then

- scores every image (`cleanlab.rank.get_label_quality_scores`, the
  "self_confidence" method: the out-of-fold probability of the given label;
  the lower, the likelier the label is wrong), which orders the findings;
- picks the images whose label is likely wrong
  (`cleanlab.filter.find_label_issues`, confident learning: the images the
  estimated class-confusion counts say were mislabelled), which are the
  findings.
"""

import dataclasses

import numpy as np

from keras_transfer.errors import DataError

# The inverse regularisation strengths tried (scikit-learn's `C`), on
# L2-normalised features. On the flowers with 5 % of the labels flipped
# (benchmarks/audit.py), the out-of-fold log loss picked 3 on one backbone's
# features and 10 on the three default backbones' side by side (2,816
# features); 30 never won. The features are used whole: reducing them to
# 256 principal components, as an earlier version did, ranked the flipped
# labels no better (precision in the top K 0.832 against 0.840 over six
# flip seeds) and is not needed for speed (all of the grid's fits on
# 2,500 images and 2,816 features: about 20 s on 2 busy cores).
C_GRID = (1.0, 3.0, 10.0, 30.0)

# How the second round weighs a training image: its first round's
# out-of-fold probability of its given label, to this power. On the flowers
# with 5 % of the labels flipped (benchmarks/audit.py, docs/audit.md), the
# square root ranked the flipped photos best: in the top K, over 30 flip
# seeds on features computed outside the audit, 85.3 % against 84.8 % for
# the fourth root, 84.7 % for the probability itself, 84.7 % for leaving
# out the images cleanlab flags, and 85.8 % for a classifier trained on the
# true labels (the most that down-weighting the wrong ones can give).
REWEIGHT_POWER = 0.5

# The second round's inverse regularisation strengths, picked by the
# out-of-fold log loss weighted as the training images are. With the
# doubted labels weighing less, it fits closer: on the flowers it picked
# 100 on every flip seed tried (the loss rose at 300 and 1,000), which
# ranked the flipped photos 0.7 points better than keeping the first
# round's 10 (14 flip seeds, paired).
REWEIGHTED_C_GRID = (3.0, 10.0, 30.0, 100.0, 300.0)

# cleanlab's ranking of the images (`get_label_quality_scores`' `method`).
RANKING = "self_confidence"


@dataclasses.dataclass(frozen=True)
class LabelIssue:
    """An image whose given label is likely wrong.

    Attributes:
        path: the image file.
        given: the class of the folder it is in.
        suggested: the class the out-of-fold classifier finds likeliest.
        score: cleanlab's label quality score in [0, 1], the out-of-fold
            probability of `given`; the lower, the likelier the label is wrong.
    """

    path: str
    given: str
    suggested: str
    score: float


def check_folds(labels, class_names, folds):
    """Raises a `DataError` when a class has fewer images than `folds`.

    Example:

    ```python
    check_folds(np.array([0, 0, 1]), ["cats", "dogs"], folds=2)  # DataError: 'dogs' ...
    ```
    """
    counts = np.bincount(labels, minlength=len(class_names))
    small = [(name, int(n)) for name, n in zip(class_names, counts) if n < folds]
    if small:
        named = ", ".join(f"{name!r} has {n}" for name, n in small)
        raise DataError(
            f"The audit's {folds}-fold cross-validation needs at least {folds} images "
            f"per class, and {named}. Add images to that class, or use fewer folds "
            f"(--folds / folds=, at least 2)."
        )


def out_of_fold_probabilities(features, labels, folds=5, seed=0, reweight=True):
    """Each image's class probabilities from a classifier that did not see it.

    Example:

    ```python
    probabilities, c = out_of_fold_probabilities(features, labels, folds=5)
    probabilities.shape  # (len(labels), number of classes)
    ```

    Args:
        features: `(N, D)` array.
        labels: `(N,)` integer class indices.
        folds: the K of K-fold cross-validation.
        seed: seed of the fold assignment.
        reweight: run a second round, on the same folds, in which each
            training image weighs its first round's out-of-fold
            probability of its label to the power `REWEIGHT_POWER`, with
            the `C` of `REWEIGHTED_C_GRID` of the lowest out-of-fold log
            loss weighted alike; False returns the first round's
            probabilities.

    Returns:
        `(probabilities, C)`: the `(N, classes)` out-of-fold probabilities
        of the last round and its `C` (the first round's: that of `C_GRID`
        with the lowest out-of-fold log loss).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits

    x = normalize(np.asarray(features, dtype=np.float64))
    labels = np.asarray(labels)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels))
    classes = int(labels.max()) + 1

    def fold_probabilities(c, weights=None):
        probabilities = np.zeros((len(labels), classes))
        for train, held_out in splits:
            model = LogisticRegression(C=c, max_iter=1000)
            model.fit(x[train], labels[train], None if weights is None else weights[train])
            probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(x[held_out])
        return probabilities

    def best_of(grid, weights=None):
        best = None
        for c in grid:
            p = fold_probabilities(c, weights)
            loss = log_loss(labels, p, sample_weight=weights, labels=np.arange(classes))
            if best is None or loss < best[0]:
                best = (loss, p, c)
        return best[1], best[2]

    # One BLAS thread: these fits are small, and beside TensorFlow's idle
    # thread pools several threads made a fit 13 times slower on 2 busy
    # cores (10.5 s against 0.8 s, 2,500 flowers, 1,280 features).
    with threadpool_limits(1):
        probabilities, c = best_of(C_GRID)
        if reweight:
            given = probabilities[np.arange(len(labels)), labels]
            probabilities, c = best_of(REWEIGHTED_C_GRID, given**REWEIGHT_POWER)
    return probabilities, c


def find_label_issues(probabilities, labels, paths, class_names):
    """The images cleanlab finds mislabelled, most suspicious first.

    Example:

    ```python
    issues = find_label_issues(probabilities, labels, paths, ["cats", "dogs"])
    issues[0].path, issues[0].given, issues[0].suggested
    ```

    Args:
        probabilities: `(N, classes)` out-of-fold probabilities.
        labels: `(N,)` given class indices.
        paths: the `N` image files.
        class_names: the class names, in label order.

    Returns:
        A list of `LabelIssue`, ordered by `score`, lowest first.
    """
    import cleanlab

    scores = label_quality(probabilities, labels)
    # One process: cleanlab's pool would fork a process that holds TensorFlow.
    flagged = cleanlab.filter.find_label_issues(labels, probabilities, n_jobs=1)
    suggested = probabilities.argmax(axis=1)
    order = [i for i in np.argsort(scores, kind="stable") if flagged[i]]
    return [
        LabelIssue(
            str(paths[i]),
            class_names[labels[i]],
            class_names[suggested[i]],
            float(scores[i]),
        )
        for i in order
    ]


def label_quality(probabilities, labels):
    """cleanlab's label quality score of every image (`RANKING`); low: suspicious.

    Example:

    ```python
    ranking = np.argsort(label_quality(probabilities, labels))  # most suspicious first
    ```
    """
    import cleanlab

    return cleanlab.rank.get_label_quality_scores(labels, probabilities, method=RANKING)
