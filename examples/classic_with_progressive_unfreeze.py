"""The classic transfer-learning script, in Keras 3, plus two lines of keras-transfer.

The exercise: a MobileNetV2 pretrained on ImageNet, its classifier replaced
by a new head, trained on your folder of images; the head first, with the
backbone frozen, then the last layers of the backbone too. The script below is
the one of the Keras transfer-learning guide, ported to Keras 3, with two
added lines (marked `# keras-transfer`):

- the import of `ProgressiveUnfreeze` and `PhaseTimer`;
- `callbacks=[ProgressiveUnfreeze(...), PhaseTimer(...)]` in `fit`.

With them, the single `fit` call trains the head for the first half of the
epochs and then also the last 20 layers of the backbone (`base_model.layers[-20:]`,
as `for layer in base_model.layers[:-20]: layer.trainable = False` would), at a
tenth of the learning rate, with BatchNormalization kept in inference mode;
`PhaseTimer` writes what each phase cost to TensorBoard. Without
`ProgressiveUnfreeze`, setting `layer.trainable` in the middle of a Keras 3
`fit` changes nothing, and the classic recipe needs a second `compile` and
`fit`.

Run:

    python examples/classic_with_progressive_unfreeze.py --data DIR
    tensorboard --logdir logs/classic

DIR holds one subfolder of images per class (DIR/<class>/<image>), e.g.
TensorFlow's flower_photos. Options: --weights imagenet (default; downloaded
into the Keras cache) or the path to a no-top MobileNetV2 weights file such as
`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5` (offline;
pass the matching --alpha, here 0.5), --alpha (default 1.0), --image-size
(default 160), --epochs (default 10), --log-dir (default logs/classic).
"""

import argparse

import keras

from keras_transfer import PhaseTimer, ProgressiveUnfreeze  # keras-transfer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with one subfolder per class")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' or the path to a no-top MobileNetV2 weights file",
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--log-dir", default="logs/classic")
    return parser.parse_args()


def main():
    args = parse_args()
    size = (args.image_size, args.image_size)

    train_ds, val_ds = keras.utils.image_dataset_from_directory(
        args.data,
        validation_split=0.2,
        subset="both",
        seed=1337,
        image_size=size,
        batch_size=32,
    )
    num_classes = len(train_ds.class_names)
    preprocess = keras.applications.mobilenet_v2.preprocess_input
    train_ds = train_ds.map(lambda x, y: (preprocess(x), y)).cache().prefetch(2)
    val_ds = val_ds.map(lambda x, y: (preprocess(x), y)).cache().prefetch(2)

    # The pretrained base, without its ImageNet classifier, frozen.
    base_model = keras.applications.MobileNetV2(
        input_shape=size + (3,),
        alpha=args.alpha,
        include_top=False,
        weights=args.weights,
    )
    base_model.trainable = False

    # A new head for our classes.
    x = base_model.output
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    predictions = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(base_model.input, predictions)

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        callbacks=[
            ProgressiveUnfreeze(base_model, {args.epochs // 2: 20}, unit="layers"),
            PhaseTimer(args.log_dir),
        ],  # keras-transfer
    )


if __name__ == "__main__":
    main()
