"""How many blocks of MobileNetV2 should be fine-tuned? A KerasTuner search.

Searches `unfreeze_blocks` (0 = train the head only) with
`keras_transfer.TransferHyperModel` on a folder of images, e.g. TensorFlow's
flower_photos, and prints the trials ranked by validation accuracy:

    python examples/tune_freeze_depth.py --data flower_photos \
        --images-per-class 40 --image-size 128 --epochs 5

Every trial trains the head alone for `--unfreeze-epoch` epochs, then the
last `unfreeze_blocks` blocks too, inside one `fit`. The other values
(head, learning rates) are fixed here so that the table isolates the freeze
depth; pass `--tuner random --max-trials 10` to search them too.

`--trials-per-process N` runs the search through
`keras_transfer.search_in_subprocesses`: N trials per fresh process, so that
memory stays bounded however many trials the search has.

ImageNet weights come from the Keras cache (`$KERAS_HOME/models/`),
downloaded if the machine is online.
"""

import argparse
import functools
import os
import random
import tempfile
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="image folder, one subfolder per class")
    parser.add_argument(
        "--images-per-class",
        type=int,
        default=0,
        help="use a random subset of this many images per class (0: all)",
    )
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument(
        "--unfreeze-blocks",
        type=int,
        nargs="+",
        default=[0, 2, 4, 8],
        help="freeze depths to compare (blocks fine-tuned from the top)",
    )
    parser.add_argument("--unfreeze-epoch", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--tuner", choices=("grid", "random", "bayesian", "hyperband"), default="grid"
    )
    parser.add_argument("--max-trials", type=int, default=None)
    parser.add_argument("--directory", default=None, help="tuner folder (default: temporary)")
    parser.add_argument(
        "--trials-per-process",
        type=int,
        default=0,
        help="run N trials per fresh process (search_in_subprocesses); 0: all in this one",
    )
    parser.add_argument("--seed", type=int, default=1337)
    return parser.parse_args(argv)


def subset_folder(source, per_class, destination, seed):
    """Links `per_class` randomly chosen images of each class into `destination`."""
    from keras_transfer.data import scan_image_folder

    info = scan_image_folder(source)
    rng = random.Random(seed)
    for name in info.class_names:
        os.makedirs(os.path.join(destination, name))
        paths = sorted(info.files[name])
        for path in rng.sample(paths, min(per_class, len(paths))):
            os.symlink(
                os.path.abspath(path), os.path.join(destination, name, os.path.basename(path))
            )
    return destination


def make_tuner(args, hypermodel, directory, overwrite):
    import keras_tuner

    common = dict(
        objective="val_accuracy",
        directory=directory,
        project_name="freeze_depth",
        overwrite=overwrite,
        seed=args.seed,
    )
    if args.tuner == "grid":
        return keras_tuner.GridSearch(hypermodel, max_trials=args.max_trials, **common)
    if args.tuner == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=args.max_trials or 10, **common)
    if args.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel, max_trials=args.max_trials or 10, **common
        )
    return keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, factor=3, **common)


# build_tuner and search_arguments also run in the processes of
# search_in_subprocesses, which import them from this module.


def build_tuner(args, data, directory, overwrite):
    import keras_transfer
    from keras_transfer.data import scan_image_folder

    size = args.image_size
    fixed = args.tuner == "grid"
    hypermodel = keras_transfer.TransferHyperModel(
        num_classes=len(scan_image_folder(data).class_names),
        backbones=(args.backbone,),
        input_shape=(size, size, 3),
        weights=None if args.weights == "none" else args.weights,
        unfreeze_blocks=tuple(args.unfreeze_blocks),
        unfreeze_epoch=args.unfreeze_epoch if fixed else (1, 2, 3),
        head_units=0 if fixed else (0, 128),
        head_dropout=0.2 if fixed else (0.0, 0.2, 0.5),
        head_learning_rate=1e-3 if fixed else None,
        backbone_lr_ratio=0.1 if fixed else (0.03, 0.1, 0.3),
    )
    return make_tuner(args, hypermodel, directory, overwrite)


def search_arguments(args, data):
    import keras

    import keras_transfer

    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, _ = keras_transfer.load_image_folder(
        data,
        image_size=args.image_size,
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=False,
    )
    return (train_ds,), {"validation_data": val_ds, "epochs": args.epochs, "verbose": 0}


def main(argv=None):
    args = parse_args(argv)
    import keras_transfer
    from keras_transfer.data import scan_image_folder
    from keras_transfer.tuner import results_table

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if args.images_per_class:
            data = subset_folder(
                args.data, args.images_per_class, os.path.join(scratch, "data"), args.seed
            )
        directory = args.directory or os.path.join(scratch, "search")
        start = time.perf_counter()
        if args.trials_per_process:
            tuner = keras_transfer.search_in_subprocesses(
                functools.partial(build_tuner, args, data, directory),
                functools.partial(search_arguments, args, data),
                trials_per_process=args.trials_per_process,
                overwrite=True,
            )
        else:
            tuner = build_tuner(args, data, directory, overwrite=True)
            search_args, search_kwargs = search_arguments(args, data)
            tuner.search(*search_args, **search_kwargs)
        seconds = time.perf_counter() - start

        images = sum(len(files) for files in scan_image_folder(data).files.values())
        size = args.image_size
        print()
        print(
            f"{args.backbone} at {size}x{size}, {images} images (a fifth for "
            f"validation), {args.epochs} epochs, {len(tuner.oracle.trials)} trials "
            f"in {seconds:.0f} s:"
        )
        print(results_table(tuner))


if __name__ == "__main__":
    main()
