"""Peak memory of training against the number of images and of tuner trials.

Two measurements, each in fresh processes so that one cannot inflate the
other's peak:

1. `keras-transfer train` (the command line, in process) on folders of
   1,000, 5,000 and 10,000 small JPEGs (32x32, 10 classes): one head-only
   epoch, `mobilenet_v2_035` with random weights, batch 64. Reported: the
   resident memory after the imports, and the peak resident memory of the
   whole run (`VmHWM` in `/proc/self/status`). `load_image_folder` caches
   the decoded images as uint8, `32 * 32 * 3` bytes each (30 MB for 10,000),
   so the peak should grow by about that much, not with the file sizes.

2. A KerasTuner `RandomSearch` of 20 trials over
   `keras_transfer.TransferHyperModel` (2 epochs per trial, fine-tuning from
   epoch 1 when a trial unfreezes blocks), on 256 random 32x32 images.
   Reported: the resident memory (`VmRSS`) after each trial and the slope of
   a straight line fitted over the trials after the fifth, which should be
   about 0 MB per trial: a tuner that leaks keeps every trial's model,
   optimizer and traced functions alive. `--baseline` runs the same search
   over a plain `keras.applications.MobileNetV2` classifier (no
   keras-transfer) for comparison. Its growth, `clear_session()` or not, is
   TensorFlow's gradient registry: every traced train step registers
   `tf.custom_gradient` functions (Keras' gradient all-reduce) that hold its
   whole graph and are never dropped (tensorflow/tensorflow#97697).
   `TransferClassifier.fit` drops those its own steps registered.

4. `--photos N ...`: `keras-transfer train --epochs 2 --fine-tune-epochs 0`
   with its defaults (MobileNetV2 0.5 with ImageNet weights, 224 px) on N
   real photos: the shared flowers (`$KERAS_TRANSFER_ASSETS/data/
   flower_photos`, 2,500), linked as many times as N needs. Reported: the
   peak RSS of each run and its slope per photo between consecutive sizes
   (the goal: at most 40 KB per photo; a decoded 224 px image is 147 KB).
   `--keep-decoded` also runs each size as before #31, the decoded images
   kept by the dataset (`load_image_folder(cache=True)`), for comparison.

3. `--trials-per-process K`: the same search through
   `keras_transfer.search_in_subprocesses` (K trials per fresh process).
   Reported: the resident memory after each trial with the process that ran
   it, and each process's peak. The search's peak is the largest of those,
   so it depends on K, not on the number of trials.

Usage:

    python benchmarks/memory.py                         # both, full sizes
    python benchmarks/memory.py --images 500 1000 --trials 6   # quick
    python benchmarks/memory.py --images --trials 20 --baseline  # tuner only
    python benchmarks/memory.py --images --trials 20 --trials-per-process 5
    python benchmarks/memory.py --images --trials 20 --trials-per-process 5 \
        --baseline --only-processes     # plain Keras models, 5 per process

    nice python benchmarks/memory.py --images --trials 0 --photos 2500 10000 40000
    nice python benchmarks/memory.py --images --trials 0 --photos 2500 10000 --keep-decoded

Linux only (reads `/proc/self/status`). No weights or data sets needed, but
for `--photos`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CLASSES = 10
IMAGE_SIZE = 32
BACKBONE = "mobilenet_v2_035"


def memory_mb(field):
    """`VmRSS` (now) or `VmHWM` (peak) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def write_images(root, count, seed=0):
    """`count` random 32x32 JPEGs in NUM_CLASSES class folders; returns root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    for index in range(count):
        label = index % NUM_CLASSES
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 20 + 20 * label, np.float32)
        pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255)
        Image.fromarray(pixels.astype("uint8")).save(folder / f"{index:05d}.jpg")
    return root


def subset(source, target, count):
    """A folder of symlinks to the first `count` images of `source`."""
    target = pathlib.Path(target)
    for index in range(count):
        name = f"class_{index % NUM_CLASSES}/{index:05d}.jpg"
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(pathlib.Path(source) / name, target / name)
    return target


# --- child processes ------------------------------------------------------------


def child_train(data_dir, output):
    import keras_transfer  # noqa: F401
    from keras_transfer import cli

    return measured_main(
        cli,
        [
            "train", data_dir,
            "--backbone", BACKBONE, "--weights", "none",
            "--image-size", str(IMAGE_SIZE), "--batch-size", "64",
            "--epochs", "1", "--fine-tune-epochs", "0",
            "--validation-split", "0.1", "--output", output,
        ],
    )  # fmt: skip


def measured_main(cli, argv):
    """Runs the command line `argv` in this process; its status, memory and seconds."""
    after_imports = memory_mb("VmRSS")
    start = time.perf_counter()
    status = cli.main(argv)
    return {
        "status": status,
        "after_imports_mb": after_imports,
        "peak_mb": memory_mb("VmHWM"),
        "seconds": time.perf_counter() - start,
    }


def flower_photos():
    root = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "assets"
    assets = pathlib.Path(os.environ.get("KERAS_TRANSFER_ASSETS", root))
    return assets / "data" / "flower_photos", assets / "weights"


def linked_photos(target, count):
    """A folder of `count` links to the flowers, in their class folders, repeated as needed."""
    source, _ = flower_photos()
    by_class = {}
    for photo in sorted(source.glob("*/*.jpg")):
        by_class.setdefault(photo.parent.name, []).append(photo)
    # Every class from the first photos on, so that any count trains.
    photos = [photo for row in zip(*by_class.values()) for photo in row]
    for index in range(count):
        photo = photos[index % len(photos)]
        link = pathlib.Path(target) / photo.parent.name / f"{index // len(photos)}_{photo.name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(photo, link)
    return target


def child_train_photos(data_dir, output, keep_decoded):
    import keras_transfer  # noqa: F401
    from keras_transfer import cli

    if keep_decoded:
        # As before #31: the training and validation datasets keep every
        # decoded image, although the fit caches their features.
        from keras_transfer.cli import training

        original = training.load_image_folder

        def load(*args, **kwargs):
            kwargs["cache"] = True
            return original(*args, **kwargs)

        training.load_image_folder = load
    _, weights = flower_photos()
    return measured_main(
        cli,
        [
            "train", data_dir, "--output", output, "--epochs", "2", "--fine-tune-epochs", "0",
            "--weights",
            str(weights / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"),
        ],
    )  # fmt: skip


def measure_photos(tmp, counts, keep_decoded):
    """Runs `train` on each number of linked photos; prints and returns the peaks."""
    label = "decoded images kept (before #31)" if keep_decoded else "as it is"
    print(f"\nkeras-transfer train --epochs 2 --fine-tune-epochs 0 on linked flowers, {label}")
    print(f"{'photos':>8}  {'after imports':>13}  {'peak RSS':>9}  {'KB/photo':>8}  {'time':>6}")
    rows = []
    for count in counts:
        folder = linked_photos(tmp / f"photos{count}-{int(keep_decoded)}", count)
        result = run_child("_train_photos", folder, tmp / f"p{count}.keras", int(keep_decoded))
        slope = ""
        if rows:
            previous_count, previous = rows[-1]
            per_photo = (result["peak_mb"] - previous["peak_mb"]) * 1024 / (count - previous_count)
            slope = f"{per_photo:.1f}"
        rows.append((count, result))
        print(
            f"{count:>8}  {result['after_imports_mb']:>10.0f} MB  {result['peak_mb']:>6.0f} MB  "
            f"{slope:>8}  {result['seconds']:>5.0f}s",
            flush=True,
        )
    return rows


def plain_hypermodel(hp):
    """The baseline: the Keras transfer-learning guide's model, nothing else."""
    import keras

    base = keras.applications.MobileNetV2(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        alpha=0.35,
        include_top=False,
        weights=None,
    )
    base.trainable = False
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(hp.Choice("head_dropout", [0.0, 0.2, 0.5]))(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rate = hp.Float("head_learning_rate", 1e-4, 1e-2, sampling="log")
    model.compile(
        keras.optimizers.Adam(rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def tuner_data():
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(256) % 2
    x = rng.uniform(0, 255, (256, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    x[y == 1] *= 0.5
    return x, y


def transfer_hypermodel():
    import keras_transfer

    return keras_transfer.TransferHyperModel(
        num_classes=2,
        backbones=(BACKBONE,),
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        weights=None,
        unfreeze_epoch=1,
    )


SEARCH_KWARGS = dict(validation_split=0.25, epochs=2, batch_size=32, verbose=0)


# search_in_subprocesses imports these by name in each process.


def build_tuner(trials, directory, baseline, overwrite):
    import keras_tuner

    return keras_tuner.RandomSearch(
        plain_hypermodel if baseline else transfer_hypermodel(),
        objective="val_accuracy",
        max_trials=trials,
        seed=0,
        directory=directory,
        project_name="memory",
        overwrite=overwrite,
    )


def search_arguments(log):
    import keras

    class MemoryLog(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {memory_mb('VmRSS'):.1f} {memory_mb('VmHWM'):.1f}\n")

    return tuner_data(), dict(SEARCH_KWARGS, callbacks=[MemoryLog()])


def child_tune_in_processes(trials, directory, per_process, baseline=False):
    import functools

    import keras_transfer

    log = os.path.join(directory, "rss.log")
    os.makedirs(directory, exist_ok=True)
    peaks = []
    start = time.perf_counter()
    keras_transfer.search_in_subprocesses(
        functools.partial(build_tuner, trials, directory, baseline),
        functools.partial(search_arguments, log),
        trials_per_process=per_process,
        overwrite=True,
        verbose=0,
    )
    with open(log) as f:
        records = [line.split() for line in f]
    for pid in dict.fromkeys(r[0] for r in records):
        peaks.append(max(float(r[2]) for r in records if r[0] == pid))
    return {
        "rss_after_trial_mb": [float(r[1]) for r in records],
        "process_of_trial": [r[0] for r in records],
        "peak_mb": max(peaks),
        "process_peaks_mb": peaks,
        "parent_peak_mb": memory_mb("VmHWM"),
        "seconds": time.perf_counter() - start,
    }


def child_tune(trials, directory, baseline=False):
    import keras_tuner

    x, y = tuner_data()
    rss = []

    class Search(keras_tuner.RandomSearch):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            rss.append(round(memory_mb("VmRSS"), 1))

    hypermodel = plain_hypermodel if baseline else transfer_hypermodel()
    tuner = Search(
        hypermodel,
        objective="val_accuracy",
        max_trials=trials,
        seed=0,
        directory=directory,
        project_name="memory",
        overwrite=True,
    )
    start = time.perf_counter()
    tuner.search(x, y, **SEARCH_KWARGS)
    return {
        "rss_after_trial_mb": rss,
        "peak_mb": memory_mb("VmHWM"),
        "seconds": time.perf_counter() - start,
    }


def run_child(*args):
    result = subprocess.run(
        [sys.executable, __file__, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        sys.exit(f"child {args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# --- report ---------------------------------------------------------------------


def slope(values):
    """Least-squares slope of `values` against their index."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="*", default=[1000, 5000, 10000])
    parser.add_argument("--trials", type=int, default=20, help="0 skips the tuner")
    parser.add_argument(
        "--trials-per-process",
        type=int,
        help="run the search through search_in_subprocesses, this many trials per process",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also search over a plain keras.applications model, for comparison",
    )
    parser.add_argument(
        "--only-processes",
        action="store_true",
        help="with --trials-per-process: skip the in-process searches",
    )
    parser.add_argument(
        "--photos",
        type=int,
        nargs="*",
        default=[],
        help="numbers of linked flower photos to train on (e.g. 2500 10000 40000)",
    )
    parser.add_argument(
        "--keep-decoded",
        action="store_true",
        help="with --photos: also run each size keeping the decoded images (before #31)",
    )
    parser.add_argument("--json", metavar="PATH", help="with --photos: write the peaks here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kt-memory-") as tmp:
        tmp = pathlib.Path(tmp)
        if args.images:
            start = time.perf_counter()
            write_images(tmp / "all", max(args.images))
            print(
                f"Wrote {max(args.images)} {IMAGE_SIZE}x{IMAGE_SIZE} JPEGs in "
                f"{time.perf_counter() - start:.1f} s.\n"
            )
            print("keras-transfer train, 1 head-only epoch, batch 64, weights none")
            print(
                f"{'images':>8}  {'after imports':>13}  {'peak RSS':>9}  {'growth':>7}  {'time':>6}"
            )
            for count in args.images:
                folder = subset(tmp / "all", tmp / f"n{count}", count)
                result = run_child("_train", folder, tmp / f"n{count}.keras")
                growth = result["peak_mb"] - result["after_imports_mb"]
                print(
                    f"{count:>8}  {result['after_imports_mb']:>10.0f} MB  "
                    f"{result['peak_mb']:>6.0f} MB  {growth:>4.0f} MB  "
                    f"{result['seconds']:>5.0f}s",
                    flush=True,
                )
        if args.photos:
            results = {}
            for keep in (False, True) if args.keep_decoded else (False,):
                rows = measure_photos(tmp, args.photos, keep)
                results["keep_decoded" if keep else "default"] = [
                    {"photos": count, **result} for count, result in rows
                ]
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"load_average": os.getloadavg(), "runs": results}, f, indent=2)
        if args.trials:
            searches = [("TransferHyperModel", False)]
            if args.baseline:
                searches.append(("plain keras.applications MobileNetV2", True))
            for label, baseline in searches if not args.only_processes else ():
                result = run_child("_tune", args.trials, tmp / "tuner", int(baseline))
                report_search(label, args.trials, result)
            for label, baseline in searches if args.trials_per_process else ():
                result = run_child(
                    "_tune_processes",
                    args.trials,
                    tmp / f"processes{int(baseline)}",
                    args.trials_per_process,
                    int(baseline),
                )
                label = (
                    f"{label}, search_in_subprocesses, {args.trials_per_process} trials per process"
                )
                report_search(label, args.trials, result)


def report_search(label, trials, result):
    rss = result["rss_after_trial_mb"]
    print(f"\nKerasTuner RandomSearch, {trials} trials, {label} ({result['seconds']:.0f} s)")
    processes = result.get("process_of_trial")
    print(f"{'trial':>6}  {'RSS after':>10}" + ("  process" if processes else ""))
    for trial, value in enumerate(rss, 1):
        where = f"  {processes[trial - 1]}" if processes else ""
        print(f"{trial:>6}  {value:>7.0f} MB{where}")
    if processes:
        peaks = ", ".join(f"{p:.0f}" for p in result["process_peaks_mb"])
        print(
            f"peak RSS of each process (MB): {peaks}; of the search: "
            f"{result['peak_mb']:.0f} MB; the calling process: "
            f"{result['parent_peak_mb']:.0f} MB ({result['seconds']:.0f} s)",
            flush=True,
        )
        return
    tail = rss[5:] if len(rss) > 7 else rss
    print(
        f"peak RSS {result['peak_mb']:.0f} MB; growth after trial "
        f"{len(rss) - len(tail) + 1}: {slope(tail):+.1f} MB per trial "
        f"({tail[-1] - tail[0]:+.0f} MB over {len(tail) - 1} trials)",
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_train":
        print("RESULT " + json.dumps(child_train(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "_train_photos":
        result = child_train_photos(sys.argv[2], sys.argv[3], bool(int(sys.argv[4])))
        print("RESULT " + json.dumps(result))
    elif len(sys.argv) > 1 and sys.argv[1] == "_tune_processes":
        result = child_tune_in_processes(
            int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), bool(int(sys.argv[5]))
        )
        print("RESULT " + json.dumps(result))
    elif len(sys.argv) > 1 and sys.argv[1] == "_tune":
        result = child_tune(int(sys.argv[2]), sys.argv[3], bool(int(sys.argv[4])))
        print("RESULT " + json.dumps(result))
    else:
        main()
