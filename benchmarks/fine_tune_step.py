"""Benchmark: the fine-tuning step of `keras-transfer train` against a bare Keras step.

The default run spends most of its time in the fine-tuning epochs: each
step runs the unfrozen top blocks of the backbone and the head, forward and
backward, from the cached output of the last frozen block. This compares,
in one process, interleaved and repeated, the seconds per image of:

(k) keras-transfer: `build_classifier` + `ProgressiveUnfreeze` (the last
    `--blocks` blocks after one head epoch) in one cached `fit`, as
    `keras-transfer train` runs it; epochs after the first fine-tuning one
    (which traces) are timed;
(b) bare Keras: the same layers (a functional model from the cached tensor
    to the backbone's output, the same pooling and Dense head,
    BatchNormalization frozen as `ProgressiveUnfreeze` leaves it), the same
    weights, compiled with one Adam and fitted on arrays of the same
    features: Keras' own forward and backward pass, nothing else;

each at `steps_per_execution` 1 and `--steps-per-execution` (Keras runs that
many steps in one call of the traced function). Images and features are
random (the cost of a step does not depend on the pixels); MobileNetV2 0.5
at 224 px, batch 32, as `train` defaults. Thread settings are process-wide
in TensorFlow and fixed at start: run it under `TF_NUM_INTRAOP_THREADS=N`
(and `TF_NUM_INTEROP_THREADS`) to compare them. It ends with the floor this
sets: the seconds that the default recipe's fine-tuning epochs (over the
flowers benchmark's 2,000 training images) spend in training steps at bare
Keras' best rate, validation and everything else excluded.

```
nice python benchmarks/fine_tune_step.py                  # 3 rounds
nice python benchmarks/fine_tune_step.py --rounds 1 --images 128  # smoke
```
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer import caching  # noqa: E402
from keras_transfer import defaults  # noqa: E402

SIZE = 224
CLASSES = 5
# The training photos of the flowers benchmark (2,500, 20 % held for validation).
TRAIN_IMAGES = 2000
BACKBONE = "mobilenet_v2_050"


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def transfer_model(args, steps_per_execution):
    keras.utils.set_random_seed(1)
    model = keras_transfer.build_classifier(
        BACKBONE, CLASSES, input_shape=(SIZE, SIZE, 3), weights=None
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def time_transfer(args, model, images, labels):
    """Seconds per image of (k)'s fine-tuning epochs after the tracing one; the cut."""
    times = EpochTimes()
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={1: args.blocks}, verbose=0)
    model.fit(
        images, labels, batch_size=32, epochs=2 + args.epochs, verbose=0,
        callbacks=[unfreeze, times],
    )  # fmt: skip
    boundary = caching.feature_cache_info(model).boundaries[-1][0]
    return [s / len(images) for s in times.seconds[2:]], boundary


def bare_model(transfer, boundary, steps_per_execution):
    """The layers (k) trains in its fine-tuning phase, as a plain Keras model."""
    backbone = next(
        layer
        for layer in transfer.layers
        if isinstance(layer, keras.Model) and layer.name not in ("head", "preprocessing")
    )
    start = backbone.get_layer(boundary).output
    features = keras.Input(start.shape[1:])
    top = keras.Model(start, backbone.output)
    for layer in top.layers:
        # As ProgressiveUnfreeze leaves them: frozen, in inference mode.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    pool, head = transfer.get_layer("pool"), transfer.get_layer("head")
    outputs = head(pool(top(features)))
    model = keras.Model(features, outputs)
    model.compile(
        keras.optimizers.Adam(1e-4),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model, start.shape[1:]


def time_bare(args, model, shape, count):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, *shape)).astype("float32")
    y = rng.integers(0, CLASSES, count)
    times = EpochTimes()
    model.fit(x, y, batch_size=32, epochs=1 + args.epochs, verbose=0, callbacks=[times])
    return [s / count for s in times.seconds[1:]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=defaults.UNFREEZE_BLOCKS)
    parser.add_argument("--steps-per-execution", type=int, default=8)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.images, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, args.images)
    results = {}
    for round_ in range(args.rounds):
        for spe in (1, args.steps_per_execution):
            transfer = transfer_model(args, spe)
            seconds, boundary = time_transfer(args, transfer, images, labels)
            results.setdefault(f"keras-transfer spe={spe}", []).extend(seconds)
            bare, shape = bare_model(transfer, boundary, spe)
            results.setdefault(f"bare Keras spe={spe}", []).extend(
                time_bare(args, bare, shape, args.images)
            )
        print(f"round {round_ + 1}: load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\nfine-tuning step, {BACKBONE} {SIZE} px, last {args.blocks} blocks, batch 32")
    base = float(np.median(results["bare Keras spe=1"]))
    for name, values in results.items():
        median = float(np.median(values))
        print(
            f"{name:24} {1000 * median:6.2f} ms/image (min {1000 * min(values):.2f}, "
            f"{len(values)} epochs)  {median / base:.2f}x bare spe=1"
        )
    floor = floor_of_default_recipe(min(np.median(v) for k, v in results.items() if "bare" in k))
    print(
        f"\nthe default recipe's fine-tuning ({defaults.FINE_TUNE_EPOCHS} epochs of "
        f"{TRAIN_IMAGES:,} images) at bare Keras' best rate: {floor:.1f} s of training "
        "steps, validation excluded"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "load_average": os.getloadavg(),
                    "ms_per_image": results,
                    "default_fine_tuning_floor_seconds": floor,
                },
                f,
                indent=2,
            )


def floor_of_default_recipe(seconds_per_image):
    """Seconds the default recipe's fine-tuning epochs spend in bare Keras' training steps."""
    return seconds_per_image * TRAIN_IMAGES * defaults.FINE_TUNE_EPOCHS


if __name__ == "__main__":
    main()
