"""Benchmark: the learning-rate finder's rate against the fixed default (1e-3).

On two small data sets built from the flower photos (the first `--per-class`
photos of each class: all five classes, and roses against tulips), for
`--seeds` seeds each, it trains the recipe of `keras-transfer train`
(`--head-epochs` head epochs, then `--fine-tune-epochs` epochs that also
train the top `--unfreeze-blocks` blocks) three times from the same initial
weights:

- "fixed 1e-3": the head at 1e-3 and the backbone at a tenth of it, the
  command line's defaults;
- "finder, backbone x0.1": the head at the rate `find_learning_rate`
  suggests (default rule), the backbone at a tenth of it, as
  `keras-transfer train --learning-rate auto` does;
- "finder, backbone 1e-4": the head at the suggested rate, the backbone at
  the default's 1e-4.

It prints, per seed and as means over the seeds, the rates, the validation
accuracy at the end of the head epochs, the best and final validation
accuracy and the final validation loss, and the time the finder took (the
rates of the other rules too).

```
python benchmarks/learning_rate_finder.py            # 100 images per class, 128 px, 5 + 5 epochs, 3 seeds
python benchmarks/learning_rate_finder.py --quick    # smoke run
python benchmarks/learning_rate_finder.py --json lr.json
```

The photos come from `$KERAS_TRANSFER_ASSETS/data/flower_photos` (default
`../shared/assets/...` beside the project), the ImageNet weights from the
`weights/` folder beside it.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from flowers import assets_dir  # noqa: E402  (benchmarks/flowers.py, beside this one)
from keras_transfer.unfreeze import fine_tune_schedule  # noqa: E402

DEFAULT_RATE = 1e-3
LR_RATIO = 0.1
DATA_SETS = {
    "flowers (5 classes)": None,
    "roses vs tulips": ("roses", "tulips"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--unfreeze-blocks", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 12 images per class, 1 seed, 1 + 1 epochs"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.seeds = 12, 1
        args.head_epochs = args.fine_tune_epochs = 1
    return args


def weights_file(spec, size):
    folder = assets_dir() / "weights"
    for name in (spec.weights_filename((size, size, 3)), spec.weights_filename()):
        if name and (folder / name).exists():
            return str(folder / name)
    sys.exit(f"learning_rate_finder.py: no weights for {spec.name} in {folder}.")


def subset(classes, per_class, root):
    """A folder of symlinks to the first `per_class` photos of each class."""
    source = assets_dir() / "data" / "flower_photos"
    names = classes or sorted(p.name for p in source.iterdir() if p.is_dir())
    for name in names:
        (root / name).mkdir(parents=True)
        for image in sorted((source / name).glob("*.jpg"))[:per_class]:
            os.symlink(image, root / name / image.name)
    return root


def build(args, weights, num_classes, seed):
    keras.utils.set_random_seed(seed)
    size = args.image_size
    model = keras_transfer.build_classifier(
        args.backbone, num_classes, input_shape=(size, size, 3), weights=weights
    )
    model.compile(
        keras.optimizers.Adam(DEFAULT_RATE),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(args, model, rate, lr_ratio, train_ds, val_ds):
    model.optimizer.learning_rate = rate
    schedule = fine_tune_schedule(
        args.head_epochs, args.unfreeze_blocks, args.fine_tune_epochs, False
    )
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule=schedule, lr_ratio=lr_ratio, verbose=0)
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.head_epochs + args.fine_tune_epochs,
        callbacks=[unfreeze],
        shuffle=False,
        verbose=0,
    ).history
    return {
        "rate": rate,
        "backbone_rate": rate * lr_ratio,
        "head_val_accuracy": history["val_accuracy"][args.head_epochs - 1],
        "best_val_accuracy": max(history["val_accuracy"]),
        "final_val_accuracy": history["val_accuracy"][-1],
        "final_val_loss": history["val_loss"][-1],
    }


def run_seed(args, weights, folder, seed):
    train_ds, val_ds, class_names = keras_transfer.load_image_folder(
        folder, args.image_size, batch_size=args.batch_size, seed=seed, verbose=False
    )
    model = build(args, weights, len(class_names), seed)
    initial = model.get_weights()
    start = time.perf_counter()
    finding = keras_transfer.find_learning_rate(model, train_ds, verbose=0)
    finder_seconds = time.perf_counter() - start
    print(
        f"  seed {seed}: {keras_transfer.learning_rate.describe(finding)} ({finder_seconds:.1f} s)"
    )
    found = finding.suggestion
    runs = {}
    for label, rate, ratio in (
        ("fixed 1e-3", DEFAULT_RATE, LR_RATIO),
        # What `keras-transfer train --learning-rate auto` does: the backbone
        # fine-tunes at --backbone-lr-ratio times the found rate.
        ("finder, backbone x0.1", found, LR_RATIO),
        # The found rate for the head only; the backbone keeps the default's.
        ("finder, backbone 1e-4", found, min(1.0, LR_RATIO * DEFAULT_RATE / found)),
    ):
        model = build(args, weights, len(class_names), seed)
        model.set_weights(initial)
        runs[label] = run = train(args, model, rate, ratio, train_ds, val_ds)
        print(
            f"    {label:<22} head {rate:<8.2g} backbone {run['backbone_rate']:<8.2g} "
            f"val acc after head {run['head_val_accuracy']:.3f}, best "
            f"{run['best_val_accuracy']:.3f}, final {run['final_val_accuracy']:.3f}, "
            f"final val loss {run['final_val_loss']:.3f}"
        )
    return {
        "seed": seed,
        "finder_seconds": finder_seconds,
        "suggestions": finding.suggestions,
        "runs": runs,
    }


def report(name, seeds):
    print(f"\n{name}: means over {len(seeds)} seed(s)")
    print(
        f"  {'run':<22} {'head lr':>8} {'head acc':>9} {'best acc':>9} "
        f"{'final acc':>9} {'val loss':>9}"
    )
    for label in seeds[0]["runs"]:
        runs = [s["runs"][label] for s in seeds]
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(
            f"  {label:<22} {mean['rate']:>8.2g} {mean['head_val_accuracy']:>9.3f} "
            f"{mean['best_val_accuracy']:>9.3f} {mean['final_val_accuracy']:>9.3f} "
            f"{mean['final_val_loss']:>9.3f}"
        )
    seconds = np.mean([s["finder_seconds"] for s in seeds])
    print(f"  finder time: {seconds:.1f} s on average")


def main(argv=None):
    args = parse_args(argv)
    spec = keras_transfer.get_backbone(args.backbone)
    weights = weights_file(spec, args.image_size)
    print(
        f"{args.backbone} at {args.image_size} px, {args.per_class} photos per "
        f"class (80% train), {args.head_epochs} + {args.fine_tune_epochs} epochs, "
        f"{args.seeds} seed(s)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        for index, (name, classes) in enumerate(DATA_SETS.items()):
            print(f"\n{name}")
            folder = subset(classes, args.per_class, pathlib.Path(temporary) / str(index))
            results[name] = [run_seed(args, weights, folder, seed) for seed in range(args.seeds)]
    for name, seeds in results.items():
        report(name, seeds)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
