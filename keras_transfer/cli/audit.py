"""`keras-transfer audit DATA_DIR`: likely label errors, duplicates and outliers.

Runs `keras_transfer.audit.audit_folder` on DATA_DIR (the layout `train`
reads) and writes `label_issues.csv`, `duplicates.csv`, `outliers.csv` and
`audit.html` to `--output-dir`. A DATA_DIR that is not a folder, an
`--output-dir` that cannot be written and a missing cleanlab are refused
before TensorFlow loads.
"""

from keras_transfer import defaults
from keras_transfer.cli.arguments import Command
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import check_image_folder
from keras_transfer.cli.arguments import fraction
from keras_transfer.cli.arguments import image_size
from keras_transfer.cli.arguments import weights_argument
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.errors import ConfigurationError

SUMMARY = "find likely label errors, duplicates and outliers in a labelled folder"

DESCRIPTION = f"""\
Audit DATA_DIR, a folder with one subfolder of images per class (the
layout '{PROG} train' reads). The pooled features of every image are
computed once by each pretrained backbone (by default three small
MobileNets at 288 px, whose features side by side found label errors
better than any one of them); then
  label_issues.csv  images whose label is likely wrong (confident learning,
                    cleanlab, on out-of-fold probabilities of a K-fold
                    logistic regression, fitted twice: the second time the
                    images the first doubted weigh less), most suspicious
                    first;
  duplicates.csv    exact (same bytes) and near duplicates (feature cosine
                    similarity), within a class, across classes, and across
                    the train/validation split of --validation-split and
                    --seed (leakage), which come first;
  outliers.csv      images unlike the others (cleanlab's OutOfDistribution);
  audit.html        all three as thumbnails, one self-contained file.
Needs cleanlab and scikit-learn: pip install keras-transfer[audit].

exit status: 0 done, 2 a folder that cannot be audited (one class, too few
images per class for --folds) or a bad option."""

EXAMPLE = f"{PROG} audit flower_photos --output-dir audit"


def add_arguments(parser):
    """Declares the options of `audit`."""
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one subfolder of images per class"
    )
    parser.add_argument(
        "--output-dir",
        default="audit",
        metavar="DIR",
        help="where to write the CSV files and audit.html (default: %(default)s)",
    )
    parser.add_argument(
        "--backbone",
        action="append",
        metavar="NAME",
        help="registered backbone whose features describe the images; repeat it for "
        f"several (default: {' '.join(defaults.AUDIT_BACKBONES)})",
    )
    parser.add_argument(
        "--weights",
        action="append",
        metavar="{imagenet,PATH}",
        help="the backbones' pretrained weights: 'imagenet' (the default), or one "
        "--weights per --backbone, in the same order",
    )
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=defaults.AUDIT_IMAGE_SIZE,
        metavar="PIXELS",
        help="side of the square input (default: %(default)s)",
    )
    parser.add_argument(
        "--resize",
        choices=defaults.RESIZE_MODES,
        default=defaults.RESIZE,
        help="how images meet the square input (default: %(default)s)",
    )
    add_batch_size_argument(parser)
    parser.add_argument(
        "--folds",
        type=int,
        default=defaults.AUDIT_FOLDS,
        metavar="K",
        help="folds of the cross-validation, at least 2 (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-split",
        type=fraction,
        default=defaults.VALIDATION_SPLIT,
        metavar="FRACTION",
        help="train's validation split, to find leakage (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        metavar="N",
        help="train's seed, and that of the folds (default: %(default)s)",
    )
    parser.add_argument(
        "--duplicate-threshold",
        type=fraction,
        metavar="SIMILARITY",
        help="cosine similarity from which two images are near duplicates "
        f"(default: {defaults.NEAR_DUPLICATE_THRESHOLD})",
    )


def audit_command(args):
    """Audits the folder, writes the files, prints a summary; returns None (exit 0).

    Raises:
        KerasTransferError: a bad path or option, a folder that cannot be
            audited, cleanlab missing.
    """
    check_image_folder(args.data_dir)
    output_dir = writable_dir(args.output_dir, "--output-dir")
    backbones = args.backbone or list(defaults.AUDIT_BACKBONES)
    weights = [weights_argument(w) for w in args.weights or ["imagenet"]]
    if None in weights:
        raise ConfigurationError(
            "--weights none: an audit needs pretrained features. Use 'imagenet' or a weights file."
        )
    if len(weights) == 1 and weights[0] == "imagenet":
        weights = weights[0]
    elif len(weights) != len(backbones):
        raise ConfigurationError(
            f"--weights: give one per --backbone, in the same order ({len(backbones)} "
            f"backbones: {', '.join(backbones)}; {len(weights)} --weights), or none for "
            f"'imagenet'."
        )
    if args.folds < 2:
        raise ConfigurationError(f"--folds must be at least 2. Received: {args.folds}")
    from keras_transfer.audit.folder_audit import require_audit_dependencies

    require_audit_dependencies()
    import_tensorflow(args.verbose)
    from keras_transfer.audit import audit_folder

    audit = audit_folder(
        args.data_dir,
        backbone=backbones,
        image_size=args.image_size,
        weights=weights,
        resize=args.resize,
        batch_size=args.batch_size,
        folds=args.folds,
        validation_split=args.validation_split,
        seed=args.seed,
        duplicate_threshold=args.duplicate_threshold,
    )
    written = audit.write(output_dir)
    leaks = sum(d.across_split for d in audit.duplicates)
    print(
        f"{len(audit.label_issues)} likely label errors, {len(audit.duplicates)} duplicate "
        f"pairs ({leaks} across the train/validation split), {len(audit.outliers)} "
        f"outliers in {len(audit.paths)} images ({audit.seconds:.0f} s)."
    )
    print("Wrote " + ", ".join(written) + ".")


COMMAND = Command("audit", SUMMARY, DESCRIPTION, add_arguments, audit_command, EXAMPLE)
