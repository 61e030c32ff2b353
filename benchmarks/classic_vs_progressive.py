"""The classic two-call fine-tuning script against one `fit` with ProgressiveUnfreeze.

Both runs use the same script shape (the Keras transfer-learning guide's,
ported to Keras 3): `keras.applications.MobileNetV2` with real ImageNet
weights, its layers inline in the model (`x = base_model.output`), a new
pooling + dropout + softmax head, the same seeded split, 5 epochs on the head
and then the last 20 layers of the backbone.

(a) classic: `fit` 5 epochs frozen; `base_model.trainable = True`, refreeze
    all but the last 20 layers, recompile with Adam(1e-5), `fit` 5 more.
(b) one `fit` of 10 epochs with
    `ProgressiveUnfreeze(base_model, {5: 3}, unit="blocks")`: the last 3
    blocks (block_15, block_16, Conv_1) are exactly the layers with weights
    among the last 20 layers.

It prints validation (and train) accuracy per epoch for both. Usage:

    python benchmarks/classic_vs_progressive.py            # 160 px, all photos
    python benchmarks/classic_vs_progressive.py --quick    # smoke run

The data and weights come from `$KERAS_TRANSFER_ASSETS` (default
`../shared/assets`).
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_transfer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = pathlib.Path(os.environ.get("KERAS_TRANSFER_ASSETS", ROOT.parent / "shared" / "assets"))
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


def classic_model(size, weights):
    keras.utils.set_random_seed(7)
    base_model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.5, include_top=False, weights=weights
    )
    base_model.trainable = False
    inputs = base_model.input
    x = base_model.output
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    predictions = keras.layers.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, predictions)
    return model, base_model


def with_preprocessing(ds):
    # MobileNetV2 expects [-1, 1]; the guide applies preprocess_input to the data.
    return ds.map(lambda x, y: (x / 127.5 - 1.0, y))


def compile_model(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


class EpochClock(keras.callbacks.Callback):
    def __init__(self, start):
        super().__init__()
        self.start = start
        self.seconds = []

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def run_classic(train_ds, val_ds, size, weights, head_epochs, tune_epochs):
    model, base_model = classic_model(size, weights)
    compile_model(model, 1e-3)
    start = time.perf_counter()
    clock = EpochClock(start)
    first = model.fit(
        train_ds, validation_data=val_ds, epochs=head_epochs, callbacks=[clock], verbose=2
    )
    base_model.trainable = True
    for layer in base_model.layers[:-20]:
        layer.trainable = False
    compile_model(model, 1e-5)
    second = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=head_epochs + tune_epochs,
        initial_epoch=head_epochs,
        callbacks=[clock],
        verbose=2,
    )
    history = {k: first.history[k] + second.history[k] for k in ("accuracy", "val_accuracy")}
    history["seconds"] = clock.seconds
    return history


def run_progressive(train_ds, val_ds, size, weights, head_epochs, tune_epochs):
    model, base_model = classic_model(size, weights)
    compile_model(model, 1e-3)
    start = time.perf_counter()
    clock = EpochClock(start)
    unfreeze = keras_transfer.ProgressiveUnfreeze(base_model, {head_epochs: 3}, unit="blocks")
    result = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=head_epochs + tune_epochs,
        callbacks=[unfreeze, clock],
        verbose=2,
    )
    history = {k: result.history[k] for k in ("accuracy", "val_accuracy")}
    history["seconds"] = clock.seconds
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ASSETS / "data" / "flower_photos"))
    parser.add_argument("--weights", default=str(ASSETS / "weights" / WEIGHTS))
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.head_epochs, args.fine_tune_epochs = 96, 1, 1

    train_ds, val_ds, class_names = keras_transfer.load_image_folder(
        args.data, args.image_size, batch_size=32, validation_split=0.2, seed=1337
    )
    if args.quick:
        train_ds, val_ds = train_ds.take(3), val_ds.take(2)
    train_ds, val_ds = with_preprocessing(train_ds), with_preprocessing(val_ds)
    runs = {}
    for name, run in (
        ("classic two fits", run_classic),
        ("one fit + ProgressiveUnfreeze", run_progressive),
    ):
        print(f"\n=== {name} ===", flush=True)
        runs[name] = run(
            train_ds, val_ds, args.image_size, args.weights, args.head_epochs, args.fine_tune_epochs
        )

    epochs = args.head_epochs + args.fine_tune_epochs
    names = list(runs)
    print(
        f"\nMobileNetV2 alpha 0.5, ImageNet weights, {args.image_size} px, "
        f"{len(class_names)} classes; fine-tuning from epoch {args.head_epochs + 1}"
    )
    print("| epoch | " + " | ".join(f"{n}: train / val acc" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for e in range(epochs):
        cells = [f"{runs[n]['accuracy'][e]:.3f} / {runs[n]['val_accuracy'][e]:.3f}" for n in names]
        print(f"| {e + 1} | " + " | ".join(cells) + " |")
    for n in names:
        head_best = max(runs[n]["val_accuracy"][: args.head_epochs])
        print(
            f"{n}: best val acc {max(runs[n]['val_accuracy']):.3f} "
            f"(head phase best {head_best:.3f}), final {runs[n]['val_accuracy'][-1]:.3f}, "
            f"{runs[n]['seconds'][-1]:.0f} s"
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
