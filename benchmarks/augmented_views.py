"""Benchmark: augmentation before a frozen backbone, uncached against `augmented_views`.

The TensorFlow transfer-learning tutorial's model: RandomFlip("horizontal")
and RandomRotation(0.2), then Rescaling, a frozen MobileNetV2 (alpha 0.5,
ImageNet weights), GlobalAveragePooling, Dropout(0.2) and Dense(5), on
flower photos at 160 px: 500 training photos (100 per class), a validation
split and a held-out split of other photos (fixed by the seed). Each recipe
trains `--head-epochs` head epochs, then `--fine-tune-epochs` epochs with
`ProgressiveUnfreeze` training the top blocks, in one `fit`:

(a) a plain `keras.Model`: every epoch runs the augmentation and the backbone;
(b) a `TransferClassifier` with `augmented_views=K` for each K of `--views`:
    K augmented views of each photo are computed once, epoch e trains on view
    e % K.

Prints, per recipe: total time (from the `fit` call, the cache pass
included), time per epoch, best validation accuracy, held-out accuracy,
and the time ratio to (a). The photos are decoded once, before any timing.
On a shared machine, `--repeats N` runs the recipes N times in turn and
prints each recipe's ratio to (a) of the same round, then the median: the
load changes less within a round than between separate runs.

```
nice -n 10 python benchmarks/augmented_views.py
python benchmarks/augmented_views.py --views 3 --per-class 20   # smoke run
python benchmarks/augmented_views.py --views 3 --repeats 3      # shared CPU
```

Weights come from `$KERAS_TRANSFER_ASSETS/weights` (default
`../shared/assets/weights` beside the project), found as in `flowers.py`.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer import caching  # noqa: E402

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = pathlib.Path(
    os.environ.get("KERAS_TRANSFER_ASSETS", PROJECT_ROOT.parent / "shared" / "assets")
)
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ASSETS / "data" / "flower_photos"))
    parser.add_argument("--weights", default=str(ASSETS / "weights" / WEIGHTS))
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--per-class", type=int, default=100, help="training photos per class")
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--held-out-per-class", type=int, default=40)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=3)
    parser.add_argument("--fine-tune-blocks", type=int, default=2)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of all recipes; ratios are to (a) of the same round",
    )
    return parser.parse_args(argv)


def load_splits(args):
    """Decoded photos: (train, validation, held-out) arrays, disjoint, fixed by the seed."""
    rng = np.random.default_rng(args.seed)
    classes = sorted(p.name for p in pathlib.Path(args.data).iterdir() if p.is_dir())
    sizes = (args.per_class, args.val_per_class, args.held_out_per_class)
    splits = [([], []) for _ in sizes]
    for label, name in enumerate(classes):
        files = sorted((pathlib.Path(args.data) / name).glob("*.jpg"))
        files = [files[i] for i in rng.permutation(len(files))[: sum(sizes)]]
        start = 0
        for (images, labels), size in zip(splits, sizes):
            for path in files[start : start + size]:
                image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
                images.append(tf.image.resize(image, (args.image_size,) * 2).numpy())
                labels.append(label)
            start += size
    return [(np.stack(x).astype("float32"), np.array(y)) for x, y in splits], len(classes)


def build(args, num_classes, views):
    """The tutorial's model; a TransferClassifier when `views` is set."""
    keras.utils.set_random_seed(args.seed)
    shape = (args.image_size, args.image_size, 3)
    base = keras.applications.MobileNetV2(
        input_shape=shape, alpha=0.5, include_top=False, weights=args.weights
    )
    base.trainable = False
    inputs = keras.Input(shape)
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomRotation(0.2)(x)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    if views is None:
        model = keras.Model(inputs, outputs)
    else:
        model = keras_transfer.TransferClassifier(inputs, outputs, augmented_views=views)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model, base


def run(args, data, num_classes, views):
    (x, y), validation, (hx, hy) = data
    model, base = build(args, num_classes, views)
    unfreeze = keras_transfer.ProgressiveUnfreeze(
        base, {args.head_epochs: args.fine_tune_blocks}, verbose=0
    )
    epochs = args.head_epochs + args.fine_tune_epochs
    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=epochs,
        validation_data=validation,
        callbacks=[unfreeze],
        verbose=0,
    )
    total = time.perf_counter() - start
    if views is not None and caching.feature_cache_info(model) is None:
        sys.exit(f"augmented_views={views}: the fit was not cached")
    held_out = model.evaluate(hx, hy, batch_size=args.batch_size, verbose=0)[1]
    return {
        "recipe": "(a) plain, uncached" if views is None else f"(b) augmented_views={views}",
        "total": total,
        "per_epoch": total / epochs,
        "best_val": max(history.history["val_accuracy"]),
        "held_out": held_out,
    }


def main(argv=None):
    args = parse_args(argv)
    data, num_classes = load_splits(args)
    print(
        f"{len(data[0][0])} training, {len(data[1][0])} validation, {len(data[2][0])} "
        f"held-out photos at {args.image_size} px; {args.head_epochs} head + "
        f"{args.fine_tune_epochs} fine-tuning epochs",
        flush=True,
    )
    rounds = []
    for _ in range(max(args.repeats, 1)):
        results = []
        for views in [None] + args.views:
            results.append(run(args, data, num_classes, views))
            r = results[-1]
            print(f"  done: {r['recipe']} in {r['total']:.1f} s", flush=True)
        rounds.append(results)
    for round_number, results in enumerate(rounds, 1):
        plain = results[0]["total"]
        title = f"round {round_number}: recipe" if len(rounds) > 1 else "recipe"
        print(
            f"\n{title:<26} {'total s':>8} {'s/epoch':>8} {'best val':>9} {'held-out':>9} {'x (a)':>6}"
        )
        for r in results:
            print(
                f"{r['recipe']:<26} {r['total']:>8.1f} {r['per_epoch']:>8.1f} "
                f"{r['best_val']:>9.3f} {r['held_out']:>9.3f} {r['total'] / plain:>6.2f}"
            )
    if len(rounds) > 1:
        print(f"\nmedian time ratio to (a) of the same round, over {len(rounds)} rounds:")
        for index, r in enumerate(rounds[0][1:], 1):
            ratios = [results[index]["total"] / results[0]["total"] for results in rounds]
            print(
                f"  {r['recipe']:<26} {np.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
