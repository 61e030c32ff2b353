"""`audit_folder`: the label issues, duplicates and outliers of an image folder.

One pass of each pretrained backbone over the images (`features`), their
features side by side, feeds the three searches (`label_issues`,
`duplicates`, `outliers`); the result, an `Audit`, holds them as lists of
dataclasses and writes them as CSV files and a self-contained HTML page
(`page`).
"""

import csv
import dataclasses
import os
import time

import numpy as np

from keras_transfer import defaults
from keras_transfer.audit.duplicates import find_duplicates
from keras_transfer.audit.features import backbone_features
from keras_transfer.audit.features import concatenate_features
from keras_transfer.audit.label_issues import check_folds
from keras_transfer.audit.label_issues import find_label_issues
from keras_transfer.audit.label_issues import out_of_fold_probabilities
from keras_transfer.audit.outliers import find_outliers
from keras_transfer.audit.page import audit_page
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import check_int

# The files `Audit.write` writes.
LABEL_ISSUES_FILE = "label_issues.csv"
DUPLICATES_FILE = "duplicates.csv"
OUTLIERS_FILE = "outliers.csv"
PAGE_FILE = "audit.html"

FOLDS = defaults.AUDIT_FOLDS

INSTALL = "pip install keras-transfer[audit]"


@dataclasses.dataclass
class Audit:
    """What `audit_folder` found.

    Attributes:
        directory: the folder audited.
        class_names: its classes, in label order.
        paths: the images audited, class by class.
        labels: `(N,)` their class indices.
        features: `(N, D)` their pooled features, every backbone's side by
            side, each backbone's of unit length.
        probabilities: `(N, classes)` their out-of-fold class probabilities.
        label_issues: `LabelIssue`s, most suspicious first.
        duplicates: `Duplicate` pairs, those across the split first.
        outliers: `Outlier`s, most unusual first.
        seconds: how long the audit took.
    """

    directory: str
    class_names: list
    paths: list
    labels: np.ndarray
    features: np.ndarray
    probabilities: np.ndarray
    label_issues: list
    duplicates: list
    outliers: list
    seconds: float = 0.0

    def write(self, output_dir):
        """Writes the three CSV files and `audit.html` to `output_dir`; returns their paths.

        Example:

        ```python
        audit.write("audit")  # ['audit/label_issues.csv', ..., 'audit/audit.html']
        ```
        """
        os.makedirs(output_dir, exist_ok=True)
        written = []
        for name, rows in (
            (LABEL_ISSUES_FILE, self.label_issues),
            (DUPLICATES_FILE, self.duplicates),
            (OUTLIERS_FILE, self.outliers),
        ):
            written.append(os.path.join(output_dir, name))
            write_csv(written[-1], rows, _fields(name))
        written.append(os.path.join(output_dir, PAGE_FILE))
        with open(written[-1], "w", encoding="utf-8") as f:
            f.write(audit_page(self, self.directory))
        return written


def write_csv(path, rows, fields):
    """Writes dataclass `rows` to a CSV file with the header `fields`.

    Example:

    ```python
    write_csv("label_issues.csv", audit.label_issues, ["path", "given", "suggested", "score"])
    ```
    """
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)


def _fields(name):
    from keras_transfer.audit.duplicates import Duplicate
    from keras_transfer.audit.label_issues import LabelIssue
    from keras_transfer.audit.outliers import Outlier

    kind = {LABEL_ISSUES_FILE: LabelIssue, DUPLICATES_FILE: Duplicate, OUTLIERS_FILE: Outlier}
    return [field.name for field in dataclasses.fields(kind[name])]


def require_audit_dependencies():
    """Raises a `ConfigurationError` naming the install command without cleanlab or scikit-learn."""
    try:
        import cleanlab  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        raise ConfigurationError(
            f"The audit needs cleanlab and scikit-learn ({e}). Install them with: {INSTALL}"
        ) from None


def audit_folder(
    directory,
    backbone=defaults.AUDIT_BACKBONES,
    image_size=defaults.AUDIT_IMAGE_SIZE,
    weights="imagenet",
    resize=defaults.RESIZE,
    batch_size=defaults.BATCH_SIZE,
    folds=FOLDS,
    validation_split=defaults.VALIDATION_SPLIT,
    seed=defaults.SEED,
    duplicate_threshold=None,
    verbose=1,
):
    """Finds likely label errors, duplicates and outliers in a labelled image folder.

    The folder has the layout `train` reads (one subfolder per class) and is
    scanned by the same code (`keras_transfer.data.scan_image_folder`).

    Example:

    ```python
    audit = keras_transfer.audit.audit_folder("flower_photos")
    audit.label_issues[0]  # LabelIssue(path='.../roses/12.jpg', given='roses', ...)
    audit.write("audit")   # label_issues.csv, duplicates.csv, outliers.csv, audit.html
    ```

    Args:
        directory: the folder, one subfolder of images per class.
        backbone: the pretrained backbone whose pooled features describe
            the images (a registered name or a `BackboneSpec`), or a
            list of them, whose features are put side by side (the
            default: three small MobileNets, which ranked the label errors
            of the flowers better than any one, see docs/audit.md).
        image_size: the side of the square input; None for each
            backbone's default.
        weights: `"imagenet"` or a weights file, as for `build_classifier`;
            with several backbones, `"imagenet"` or a list with one entry
            per backbone.
        resize: `"stretch"`, `"crop"` or `"pad"`, as for `load_image_folder`.
        batch_size: images per batch of the feature pass.
        folds: folds of the cross-validation behind the label issues (at
            least 2, at most the images of the smallest class).
        validation_split: that of the `train` run whose split the
            duplicates are checked against.
        seed: that run's seed; also the seed of the folds.
        duplicate_threshold: cosine similarity from which two images are
            near duplicates; None for
            `keras_transfer.audit.duplicates.NEAR_DUPLICATE_THRESHOLD`.
        verbose: 1 prints what is done and a progress bar, 0 nothing.

    Returns:
        An `Audit`.

    Raises:
        DataError: the folder cannot be used (not one subfolder per class,
            a single class), or a class has fewer images than `folds`.
        ConfigurationError: cleanlab or scikit-learn is missing, or an
            argument is wrong (such as one weights file for several
            backbones).
        WeightsError: a backbone's pretrained weights cannot be found
            (offline and not cached), before the first feature pass.
    """
    from keras_transfer.data import scan_image_folder
    from keras_transfer.data.split import stratified_split

    require_audit_dependencies()
    folds = check_int(folds, "folds", minimum=2)
    started = time.perf_counter()
    info = scan_image_folder(directory)
    class_names = list(info.class_names)
    paths = [p for name in class_names for p in info.files[name]]
    labels = np.array([k for k, name in enumerate(class_names) for _ in info.files[name]])
    check_folds(labels, class_names, folds)
    _, held_out = stratified_split(info, validation_split, seed)
    held_out = {path for path, _ in held_out}
    validation = np.array([p in held_out for p in paths])
    backbones = list(backbone) if isinstance(backbone, (list, tuple)) else [backbone]
    if verbose:
        print(f"Computing the features of {len(paths)} images ({len(class_names)} classes).")
    blocks = backbone_features(
        paths, backbones, image_size, weights, resize, batch_size, True, verbose
    )
    features = concatenate_features(blocks)
    probabilities, _ = out_of_fold_probabilities(features, labels, folds, seed)
    return Audit(
        directory=str(directory),
        class_names=class_names,
        paths=paths,
        labels=labels,
        features=features,
        probabilities=probabilities,
        label_issues=find_label_issues(probabilities, labels, paths, class_names),
        duplicates=find_duplicates(
            features, paths, labels, class_names, validation, duplicate_threshold
        ),
        outliers=find_outliers(features, paths, labels, class_names),
        seconds=time.perf_counter() - started,
    )
