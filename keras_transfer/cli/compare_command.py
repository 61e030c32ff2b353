"""`keras-transfer compare [DATA_DIR]`: what a pretrained backbone buys, measured.

For each backbone, trains from scratch, pretrained with the head only, and
pretrained with the head then progressive fine-tuning, on one seeded split
and under the same epoch count or wall-clock budget; writes a report, the
results, a plot and TensorBoard logs. The work is
`keras_transfer.experiment.run_comparison`; the options, and their checks
before TensorFlow loads, are in `compare_arguments`.
"""

import sys

from keras_transfer.cli.compare_arguments import check_compare_arguments
from keras_transfer.experiment import run_comparison
from keras_transfer.experiment.options import DEFAULT_EPOCHS


def compare_command(args):
    """Runs `run_comparison` with the parsed arguments."""
    check_compare_arguments(args)
    epochs = args.epochs
    # Without either limit a run would never stop.
    if epochs is None and args.budget_minutes is None:
        epochs = DEFAULT_EPOCHS
    run_comparison(
        args.data_dir,
        backbones=args.backbones,
        output_dir=args.output_dir,
        epochs=epochs,
        budget_minutes=args.budget_minutes,
        image_size=args.image_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_split=args.validation_split,
        seed=args.seed,
        target_accuracy=args.target_accuracy,
    )
    sys.stdout.flush()
