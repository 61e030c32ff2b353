"""Which backbone, and is pretraining worth it? A comparison on your own images.

For each backbone, trains on one seeded split of DATA: from scratch, with
ImageNet weights and the head only, and with the head first and then the top
blocks (`ProgressiveUnfreeze`), every run stopped at the same budget, after
an unclocked warm-up of each backbone and from the same seeds. Writes
OUT/report.md (a table and a conclusion), OUT/results.json (per-epoch
history), OUT/accuracy_vs_time.png and OUT/compare.log (the per-epoch lines;
the terminal shows one progress line per run), and prints the report. The same as
`keras-transfer compare`, from Python: `keras_transfer.run_comparison`.

Run:

    python examples/compare_backbones.py --data DIR
    python examples/compare_backbones.py --data DIR \\
        --backbones mobilenet_v2_035,mobilenet_v2_050,mobilenet_v1_025,resnet50 \\
        --budget-minutes 5 --image-size 128 --weights-dir WEIGHTS

DIR holds one subfolder of images per class (DIR/<class>/<image>). Offline,
--weights-dir names a folder of Keras ImageNet weights files (the files Keras
downloads, e.g. `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5`):
they are linked into a temporary Keras cache, so that `weights="imagenet"`
finds them without a download. Backbones whose weights are neither there nor
downloadable are reported as skipped, and the others run.

Options: --backbones (default mobilenet_v2_035,mobilenet_v2_050,
mobilenet_v1_025), --budget-minutes (default 3), --epochs (default: as many
as the budget allows), --image-size (default 128), --output-dir (default
compare_backbones), --weights-dir.
"""

import argparse
import os
import pathlib
import tempfile

import keras_transfer
from keras_transfer.experiment import REPORT_FILE


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with one subfolder per class")
    parser.add_argument("--backbones", default="mobilenet_v2_035,mobilenet_v2_050,mobilenet_v1_025")
    parser.add_argument("--budget-minutes", type=float, default=3.0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--output-dir", default="compare_backbones")
    parser.add_argument(
        "--weights-dir", help="folder of Keras ImageNet weights files (offline use)"
    )
    return parser.parse_args()


def use_weights_from(folder):
    """Points Keras' cache at a temporary folder that links the files of `folder`."""
    home = pathlib.Path(tempfile.mkdtemp(prefix="keras_home_"))
    (home / "models").mkdir()
    for path in pathlib.Path(folder).expanduser().resolve().glob("*.h5"):
        (home / "models" / path.name).symlink_to(path)
    # keras_transfer reads KERAS_HOME at every call.
    os.environ["KERAS_HOME"] = str(home)


def main():
    args = parse_args()
    if args.weights_dir:
        use_weights_from(args.weights_dir)
    keras_transfer.run_comparison(
        args.data,
        backbones=args.backbones.split(","),
        budget_minutes=args.budget_minutes,
        epochs=args.epochs,
        image_size=args.image_size,
        output_dir=args.output_dir,
    )
    print()
    print(pathlib.Path(args.output_dir, REPORT_FILE).read_text())


if __name__ == "__main__":
    main()
