"""Benchmark: decoding photos as phones store them, 12-megapixel JPEGs against the originals.

The held-out flower photos of `recipes.py` (50 per class, fixed by
`--split-seed`) are copied, upscaled to 12 MP (4032x3024, or 3024x4032 for
portrait photos; JPEG quality 90, about 1-2 MB each) into a temporary
folder that is deleted afterwards. Three decoders read both sets into
`--image-size` px batches, uncached, as `keras-transfer evaluate` and
`predict` do:

- `baseline`: the pipeline before issue #26, `tf.io.decode_image` at full
  size, then `tf.image.resize` bilinear without antialiasing;
- `full`: `keras_transfer.data.images.decode_image_file` with JPEG draft
  (DCT scaling) switched off: a full decode, then the antialiased resize;
- `scaled`: `decode_image_file` as it is, the JPEG decoded at the smallest
  DCT scale that covers the size, then the antialiased resize.

It prints images per second of each (the best of `--repeats` passes, on
`tf.data` with `AUTOTUNE` parallelism) and the ratios to `baseline`. Then
one model, `keras-transfer train`'s default recipe (`train-default` of
`recipes.py`, the weights averaged over its fine-tuning epochs) trained
on the other photos through `load_image_folder`, scores both sets through
each decoder with `keras_transfer.evaluate`: the accuracy, and the seconds
to score (decode and predict), with the 12 MP set's time as a multiple of
the originals'. Last, as the issue measured it, the wall time of
`keras-transfer evaluate MODEL FOLDER` in a fresh process for each set
(start-up, model load, the folder's decode check and the scoring).

```
nice python benchmarks/photo_decoding.py                     # 224 px, 250 held-out photos
python benchmarks/photo_decoding.py --limit 12 --held-out-per-class 4 --image-size 96  # smoke
```

Results go to `--output` (default `benchmarks/results/photo_decoding.json`).
Times are only comparable within one run on one machine: the load average
is recorded.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from PIL import JpegImagePlugin  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.data import loading  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flowers  # noqa: E402
import recipes  # noqa: E402

TWELVE_MP = (4032, 3024)
DECODERS = ("baseline", "full", "scaled")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(flowers.assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--held-out-per-class", type=int, default=50)
    parser.add_argument("--validation-per-class", type=int, default=50)
    parser.add_argument("--split-seed", type=int, default=1337)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, help="training photos per class (smoke runs)")
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).resolve().parent / "results" / "photo_decoding.json"),
    )
    return parser.parse_args(argv)


def upscale(held_dir, target):
    """12 MP JPEG copies of the held-out photos, class folders kept."""
    count, size = 0, 0
    for folder in sorted(p for p in pathlib.Path(held_dir).iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True)
        for photo in sorted(folder.iterdir()):
            with Image.open(photo) as image:
                image = image.convert("RGB")
                shape = TWELVE_MP if image.width >= image.height else TWELVE_MP[::-1]
                big = image.resize(shape, Image.Resampling.BICUBIC)
            path = target / folder.name / (photo.stem + ".jpg")
            big.save(path, quality=90)
            count, size = count + 1, size + path.stat().st_size
    return count, size


def baseline_dataset(items, image_size, batch_size):
    """The pipeline before #26: full decode, bilinear resize without antialiasing."""
    paths = tf.constant([os.fsencode(p) for p, _ in items])
    labels = tf.constant([label for _, label in items], dtype=tf.int32)

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, image_size, method="bilinear")
        image = tf.saturate_cast(tf.round(image), tf.uint8)
        image.set_shape((*image_size, 3))
        return tf.cast(image, tf.float32), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


class NoDraft:
    """Switches Pillow's JPEG draft (DCT scaling) off: a full decode."""

    def __enter__(self):
        self.draft = JpegImagePlugin.JpegImageFile.draft
        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None

    def __exit__(self, *exc):
        JpegImagePlugin.JpegImageFile.draft = self.draft


def dataset(decoder, folder, args):
    """An uncached, unshuffled dataset of `folder` through `decoder`, and its class names."""
    info = keras_transfer.data.scan_image_folder(folder)
    items = [
        (path, label) for label, name in enumerate(info.class_names) for path in info.files[name]
    ]
    size = (args.image_size, args.image_size)
    if decoder == "baseline":
        ds = baseline_dataset(items, size, args.batch_size)
    else:
        ds = loading.image_dataset(items, size, args.batch_size)
    ds.class_names = list(info.class_names)
    return ds


def timed(decoder, function):
    if decoder == "full":
        with NoDraft():
            start = time.perf_counter()
            result = function()
    else:
        start = time.perf_counter()
        result = function()
    return result, time.perf_counter() - start


def throughput(decoder, folder, count, args):
    """Images per second, the best of `--repeats` passes over `folder`."""
    best = 0.0
    for _ in range(args.repeats):
        ds = dataset(decoder, folder, args)
        _, seconds = timed(decoder, lambda ds=ds: sum(int(y.shape[0]) for _, y in ds))
        best = max(best, count / seconds)
    return best


def train_model(args, run_dir, spec, weights):
    fraction = min(0.5, args.validation_per_class / len(list(run_dir.glob("*/*"))) * 5)
    train, val, class_names = keras_transfer.load_image_folder(
        run_dir, args.image_size, batch_size=args.batch_size,
        validation_split=fraction, seed=args.split_seed, verbose=False,
    )  # fmt: skip
    recipe = recipes.select("train-default")[0]
    data = (train, val, None, class_names, None)
    shape = (args.image_size, args.image_size, 3)
    model, best, seconds = recipes.fit_recipe(recipe, data, spec, weights, shape, args.seed)
    tune = recipe.fine_tune_epochs
    model.set_weights([recipes._mean(ws) for ws in zip(*best.snapshots[-tune:])])
    return model, seconds


def main(argv=None):
    args = parse_args(argv)
    spec = keras_transfer.get_backbone(args.backbone)
    args.weights = None
    weights = flowers.resolve_weights(args, spec)
    results = {
        "image_size": args.image_size, "backbone": spec.name, "machine": platform.node(),
        "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        run_dir, held_dir, _ = recipes.split_folders(args, root)
        big_dir = pathlib.Path(root) / "twelve_mp"
        start = time.perf_counter()
        count, size = upscale(held_dir, big_dir)
        print(f"{count} held-out photos upscaled to 12 MP ({size / count / 1e6:.2f} MB each) "
              f"in {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        sets = {"originals": held_dir, "12mp": big_dir}

        speed = {}
        for name, folder in sets.items():
            for decoder in DECODERS:
                speed[f"{name}/{decoder}"] = throughput(decoder, folder, count, args)
                print(f"{name:9} {decoder:8} {speed[f'{name}/{decoder}']:7.1f} images/s",
                      flush=True)  # fmt: skip
        results["images_per_second"] = speed

        model, fit_seconds = train_model(args, run_dir, spec, weights)
        print(f"train-default trained in {fit_seconds:.0f} s", flush=True)
        # Off the clock: the first evaluate traces the predict function.
        keras_transfer.evaluate(model, dataset("scaled", held_dir, args).take(1))
        scores = {}
        for name, folder in sets.items():
            for decoder in DECODERS:
                ds = dataset(decoder, folder, args)
                result, seconds = timed(decoder, lambda ds=ds: keras_transfer.evaluate(model, ds))
                scores[f"{name}/{decoder}"] = {"accuracy": result.accuracy, "seconds": seconds}
                print(f"{name:9} {decoder:8} accuracy {result.accuracy:.3f}, scored in "
                      f"{seconds:.1f} s", flush=True)  # fmt: skip
        results["scores"] = scores
        model_path = pathlib.Path(root) / "model.keras"
        model.save(model_path)
        results["cli_seconds"] = {name: cli_evaluate(model_path, folder, root)
                                  for name, folder in sets.items()}  # fmt: skip
        print(f"keras-transfer evaluate: {results['cli_seconds']}", flush=True)
    results["load_after"] = os.getloadavg()[0]
    keras.backend.clear_session()
    print("\n".join(report(results)))
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1))


def cli_evaluate(model_path, folder, root):
    """Seconds of `keras-transfer evaluate` in a fresh process, as a user runs it."""
    command = [sys.executable, "-m", "keras_transfer", "evaluate", str(model_path),
               str(folder), "--output-dir", str(pathlib.Path(root) / "evaluation")]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def report(results):
    speed, scores = results["images_per_second"], results["scores"]
    lines = [
        f"\n{results['image_size']} px, {results['backbone']}; load "
        f"{results['load_before']:.1f} -> {results['load_after']:.1f}",
        "set        decoder   images/s  x baseline  accuracy  score s  x originals",
    ]
    for name in ("originals", "12mp"):
        for decoder in DECODERS:
            key = f"{name}/{decoder}"
            same = scores[f"originals/{decoder}"]["seconds"]
            lines.append(
                f"{name:10} {decoder:8} {speed[key]:9.1f}  "
                f"{speed[key] / speed[f'{name}/baseline']:10.2f}  "
                f"{scores[key]['accuracy']:8.3f}  {scores[key]['seconds']:7.1f}  "
                f"{scores[key]['seconds'] / same:11.2f}"
            )
    cli = results["cli_seconds"]
    lines.append(
        f"keras-transfer evaluate: originals {cli['originals']:.1f} s, 12 MP "
        f"{cli['12mp']:.1f} s ({cli['12mp'] / cli['originals']:.2f}x)"
    )
    return lines


if __name__ == "__main__":
    main()
