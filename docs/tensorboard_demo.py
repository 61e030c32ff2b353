"""The run behind docs/tensorboard_phase_timing.png.

MobileNetV2 alpha 0.5 (real ImageNet weights) on the 2,500 flower photos at
128 px, 8 epochs in one fit: head only, then the last 2 blocks from epoch 3,
the last 4 from epoch 5; Keras' TensorBoard and PhaseTimer share the log dir.

    python docs/tensorboard_demo.py runs/tb_demo
    tensorboard --logdir runs/tb_demo --host 127.0.0.1 --port 6124 &
    chromium --headless --no-sandbox --hide-scrollbars --window-size=1500,1300 \
      --virtual-time-budget=15000 --screenshot=docs/tensorboard_phase_timing.png \
      "http://127.0.0.1:6124/?darkMode=false#scalars&tagFilter=phase%7Cepoch_accuracy&_smoothingWeight=0"
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_transfer  # noqa: E402

ASSETS = pathlib.Path(
    os.environ.get(
        "KERAS_TRANSFER_ASSETS",
        pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "assets",
    )
)
WEIGHTS = ASSETS / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


def main(log_dir):
    train_ds, val_ds, _ = keras_transfer.load_image_folder(
        ASSETS / "data" / "flower_photos", 128, validation_split=0.2, seed=1337
    )
    keras.utils.set_random_seed(1)
    base = keras.applications.MobileNetV2(
        input_shape=(128, 128, 3), alpha=0.5, include_top=False, weights=str(WEIGHTS)
    )
    base.trainable = False
    inputs = keras.Input((128, 128, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    tensorboard = keras.callbacks.TensorBoard(log_dir)
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=8,
        verbose=2,
        callbacks=[
            keras_transfer.ProgressiveUnfreeze(base, {3: 2, 5: 4}),
            tensorboard,
            keras_transfer.PhaseTimer(tensorboard),
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/tb_demo")
