"""Benchmark: one inference pass over photos read by `load_image_folder`, with and without tf.data's autotuner.

Runs MobileNetV2 0.5 (224 px, ImageNet weights) over the training and
validation photos of the flowers (2,500 by default), batch by batch as the
frozen-feature cache pass reads them, through two pipelines of the same
steps (list, decode with Pillow, batch, float32):

- `autotuned`: every `num_parallel_calls` and the prefetch `AUTOTUNE`, as
  `load_image_folder` built it before (and as the tf.data guide writes it);
- `fixed`: `load_image_folder` today: the autotuner off, a map as parallel as
  the cores, a prefetch of 2 batches (`keras_transfer.utils.pipelines`);

interleaved over `--rounds`, and prints each pass's wall time and the
process's CPU time over it. On a machine the pass has to itself, wall time
well above CPU time means the process sat idle waiting for its input.

```
python benchmarks/pipeline_autotuning.py                 # 3 rounds, ~4 min on 2 cores
python benchmarks/pipeline_autotuning.py --limit 40 --rounds 1   # smoke
```
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.data.images import decode_image_file  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flowers  # noqa: E402

SIZE = 224
BATCH = 32


def autotuned(files, labels):
    """The same steps as `load_image_folder`, every stage `AUTOTUNE`d."""

    def load(path, label):
        image = tf.numpy_function(
            lambda p: decode_image_file(p, (SIZE, SIZE), "crop"), [path], tf.uint8
        )
        image.set_shape((SIZE, SIZE, 3))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fixed(files, labels):
    from keras_transfer.data.loading import image_dataset

    items = list(zip(files, labels))
    return image_dataset(items, (SIZE, SIZE), BATCH, resize="crop")


def one_pass(model, dataset):
    wall, cpu = time.perf_counter(), time.process_time()
    for images, _ in dataset:
        model(images).numpy()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(flowers.assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, help="photos per class (default: all)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    folder = pathlib.Path(args.data)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((folder / name).glob("*.jpg"))[: args.limit]:
            files.append(str(path))
            labels.append(index)
    weights = (
        flowers.assets_dir()
        / "weights"
        / ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5")
    )
    classifier = keras_transfer.build_classifier(
        "mobilenet_v2_050", len(classes), input_shape=(SIZE, SIZE, 3), weights=str(weights)
    )
    features = keras.Model(classifier.inputs, classifier.get_layer("pool").output)
    model = tf.function(
        lambda x: features(x, training=False),
        input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)],
        autograph=False,
    )
    model(tf.zeros((2, SIZE, SIZE, 3)))
    results = {"autotuned": [], "fixed": []}
    for round_ in range(args.rounds):
        for name, build in (("autotuned", autotuned), ("fixed", fixed)):
            wall, cpu = one_pass(model, build(files, labels))
            results[name].append({"wall": wall, "cpu": cpu, "load": os.getloadavg()[0]})
            print(f"round {round_ + 1} {name:9}: wall {wall:5.1f} s, CPU {cpu:5.1f} s", flush=True)
    print(f"\n{len(files)} photos, MobileNetV2 0.5 at {SIZE} px, {os.cpu_count()} cores")
    for name, runs in results.items():
        walls = sorted(r["wall"] for r in runs)
        idle = sum(r["wall"] - r["cpu"] > 0.2 * r["cpu"] for r in runs)
        print(
            f"{name:9}: median wall {walls[len(walls) // 2]:.1f} s; passes with wall > 1.2x "
            f"CPU (idle, waiting for input): {idle} of {len(runs)}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"photos": len(files), "cores": os.cpu_count(), "passes": results}, f, indent=1
            )


if __name__ == "__main__":
    main()
