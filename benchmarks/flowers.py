"""Benchmark: the classic transfer-learning script against keras-transfer, on flower photos.

Runs, in one process, on the same train/validation split, backbone and input
size, one after the other:

(c) the floor: one bare inference pass of the backbone over every training
    and validation image (JPEG decoding included, as in any first epoch);
(a) the classic recipe, ported to Keras 3: a frozen `keras.applications`
    backbone with inline layers (rescaling, global average pooling,
    Dropout(0.2), Dense), Adam(1e-3) for `--head-epochs` epochs; then the
    last 20 layers unfrozen, recompiled with Adam(1e-5), and a second
    `fit` for `--fine-tune-epochs` epochs;
(b) keras-transfer: `build_classifier` (frozen features cached by its `fit`)
    and `ProgressiveUnfreeze`, in one `fit` of the same number of epochs;
(p) the classic recipe (a) as a whole process (`python flowers.py --recipes
    a` in a subprocess: imports, loading, building and both fits);
(t) `keras-transfer train` with its defaults, as a whole process (its own
    recipe: 3 head epochs, 8 with the last 8 blocks, weights averaged), and
    where its seconds went, from its history.json (the run's own "timeline"
    stamps and epoch times): start-up, scan, model, cache pass, each phase
    and epoch, scoring the averaged model, saving, and the rest;

and prints, for (a) and (b): the time to first reach (a)'s best validation
accuracy, the total time, the best and final validation accuracy, the time of
each phase and of its epochs, and the ratios (b)/(a). Times are wall-clock
seconds from the first `fit` call (model building excluded), validation
included. Each recipe reads the images through its own, fresh
`load_image_folder` datasets, so each pays for decoding the JPEGs once.

```
python benchmarks/flowers.py                      # full run, 2000 + 500 images
python benchmarks/flowers.py --recipes cpt        # the command line against the classic
python benchmarks/flowers.py --quick              # smoke run, a few images
python benchmarks/flowers.py --json results.json  # also write the figures
```

The images come from `--data` (default: `$KERAS_TRANSFER_ASSETS/data/
flower_photos`, or `../shared/assets/...` beside the project) and the
ImageNet weights from the `weights/` folder next to it (or `--weights`).
Run it on a quiet machine: the timings are only comparable within a run.
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
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer import caching  # noqa: E402

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS_ENV = "KERAS_TRANSFER_ASSETS"
CLASSIC_UNFROZEN_LAYERS = 20


def classic_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def assets_dir():
    return pathlib.Path(os.environ.get(ASSETS_ENV, PROJECT_ROOT.parent / "shared" / "assets"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        default=str(assets_dir() / "data" / "flower_photos"),
        help="folder with one subfolder of images per class (default: %(default)s)",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument(
        "--weights",
        help="ImageNet weights file of the backbone (default: the file Keras "
        "would download, from the assets' weights/ folder)",
    )
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=3,
        help="blocks (b) unfreezes after the head epochs; MobileNetV2's last 3 "
        "blocks are the classic recipe's last 20 layers (default: 3)",
    )
    parser.add_argument(
        "--backbone-lr-ratio",
        type=float,
        default=0.1,
        help="(b)'s backbone learning rate relative to the head's 1e-3 (default: 0.1)",
    )
    parser.add_argument(
        "--recipes",
        default="cab",
        help="which of c (floor), a (classic), b (keras-transfer), p (the classic "
        "as a whole process), t (keras-transfer train, the whole process) to "
        "run, in that order (default: cab)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 8 images per class at 96 px, 1 + 1 epochs",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size = 96 if args.image_size == 224 else args.image_size
        args.head_epochs = args.fine_tune_epochs = 1
        args.batch_size = min(args.batch_size, 8)
    return args


def resolve_weights(args, spec):
    if args.weights:
        return args.weights
    folder = assets_dir() / "weights"
    shape = (args.image_size, args.image_size, 3)
    # No-top weights fit every input size; Keras names the file by size.
    for name in (spec.weights_filename(shape), spec.weights_filename()):
        if name and (folder / name).exists():
            return str(folder / name)
    sys.exit(
        f"flowers.py: no weights for {spec.name} in {folder}; pass --weights or set {ASSETS_ENV}."
    )


def quick_subset(data, per_class, root):
    """A folder of symlinks to the first `per_class` images of each class."""
    source = pathlib.Path(data)
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = pathlib.Path(root) / folder.name
        target.mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:per_class]:
            os.symlink(image, target / image.name)
    return root


def load(args):
    """Fresh datasets: each recipe decodes the JPEGs once, like a real run."""
    train, val, class_names = keras_transfer.load_image_folder(
        args.data,
        args.image_size,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
        verbose=False,
    )
    return train, val, class_names


class EpochClock(keras.callbacks.Callback):
    """Records the wall-clock time and logs at the end of every epoch."""

    def __init__(self, start):
        super().__init__()
        self.start = start
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch, "seconds": time.perf_counter() - self.start}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.epochs.append(record)


def run_floor(args, spec, weights):
    train, val, _ = load(args)
    backbone = spec.build(input_shape=(args.image_size, args.image_size, 3), weights=weights)
    inputs = keras.Input((args.image_size, args.image_size, 3))
    x = keras_transfer.layers.backbone_preprocessing(spec.preprocessing)(inputs)
    model = keras.Model(inputs, backbone(x, training=False))
    start = time.perf_counter()
    count = 0
    for dataset in (train, val):
        count += len(model.predict(dataset, verbose=0))
    first = time.perf_counter() - start
    start = time.perf_counter()
    for dataset in (train, val):
        model.predict(dataset, verbose=0)
    decoded = time.perf_counter() - start
    return {
        "name": "(c) one inference pass",
        "images": count,
        "seconds": first,
        "seconds_decoded_images": decoded,
        "images_per_second": count / first,
    }


def build_classic(spec, weights, image_size, num_classes, seed):
    """The classic script's model, as written for legacy tf.keras, ported to Keras 3.

    Returns `(model, base_model)`, compiled for the head phase: Adam(1e-3).
    `benchmarks/recipes.py` builds its classic reference with it too.
    """
    keras.utils.set_random_seed(seed)
    shape = (image_size, image_size, 3)
    base_model = spec.resolve_constructor()(
        input_shape=shape, include_top=False, weights=weights, **spec.constructor_kwargs
    )
    base_model.trainable = False
    inputs = keras.Input(shape=shape)
    if spec.preprocessing == "tf":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(inputs)
    else:
        x = keras_transfer.layers.backbone_preprocessing(spec.preprocessing)(inputs)
    x = base_model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), classic_loss(), metrics=["accuracy"])
    return model, base_model


def unfreeze_classic(model, base_model):
    """The classic second phase: the last 20 layers trainable, recompiled at Adam(1e-5)."""
    base_model.trainable = True
    for layer in base_model.layers[:-CLASSIC_UNFROZEN_LAYERS]:
        layer.trainable = False
    model.compile(keras.optimizers.Adam(1e-5), classic_loss(), metrics=["accuracy"])


def run_classic(args, spec, weights, num_classes):
    """The classic script: two `fit` calls, the second after `unfreeze_classic`."""
    train, val, _ = load(args)
    model, base_model = build_classic(spec, weights, args.image_size, num_classes, args.seed)

    start = time.perf_counter()
    clock = EpochClock(start)
    model.fit(train, validation_data=val, epochs=args.head_epochs, callbacks=[clock], verbose=2)
    head_end = time.perf_counter() - start

    unfreeze_classic(model, base_model)
    model.fit(
        train,
        validation_data=val,
        epochs=args.head_epochs + args.fine_tune_epochs,
        initial_epoch=args.head_epochs,
        callbacks=[clock],
        verbose=2,
    )
    total = time.perf_counter() - start
    return summarize("(a) classic recipe", clock.epochs, head_end, total, args)


def run_transfer(args, spec, weights, num_classes):
    """keras-transfer: one fit, frozen features cached, ProgressiveUnfreeze."""
    train, val, _ = load(args)
    keras.utils.set_random_seed(args.seed)
    model = keras_transfer.build_classifier(
        spec.name,
        num_classes,
        input_shape=(args.image_size, args.image_size, 3),
        weights=weights,
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    unfreeze = keras_transfer.ProgressiveUnfreeze(
        schedule={args.head_epochs: args.unfreeze_blocks},
        lr_ratio=args.backbone_lr_ratio,
    )
    start = time.perf_counter()
    clock = EpochClock(start)
    model.fit(
        train,
        validation_data=val,
        epochs=args.head_epochs + args.fine_tune_epochs,
        callbacks=[unfreeze, clock],
        verbose=2,
    )
    total = time.perf_counter() - start
    head_end = clock.epochs[args.head_epochs - 1]["seconds"]
    result = summarize("(b) keras-transfer", clock.epochs, head_end, total, args)
    info = caching.feature_cache_info(model)
    result["cache_seconds"] = info.seconds if info else None
    result["cache_boundaries"] = [list(b) for b in info.boundaries] if info else None
    return result


def run_classic_process(args):
    """(p) the classic recipe as a whole process: `flowers.py --recipes a` in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "classic.json")
        command = [
            sys.executable,
            __file__,
            "--data",
            args.data,
            "--recipes",
            "a",
            "--json",
            results,
        ]
        command += _shared_options(args)
        command += ["--head-epochs", str(args.head_epochs)]
        command += ["--fine-tune-epochs", str(args.fine_tune_epochs)]
        if args.weights:
            command += ["--weights", args.weights]
        launch = time.time()
        subprocess.run(command, check=True, capture_output=True)
        total = time.time() - launch
        with open(results) as f:
            classic = json.load(f)["results"]["a"]
    return {
        "name": "(p) classic, whole process",
        "total_seconds": total,
        "best_val_accuracy": classic["best_val_accuracy"],
        "final_val_accuracy": classic["final_val_accuracy"],
    }


def _shared_options(args):
    """The options of both flowers.py and `keras-transfer train` that (p) and (t) pass on."""
    return [
        "--image-size", str(args.image_size), "--backbone", args.backbone,
        "--seed", str(args.seed), "--batch-size", str(args.batch_size),
        "--validation-split", str(args.validation_split),
    ]  # fmt: skip


def run_train_command(args, weights):
    """(t) `keras-transfer train` with its default recipe, the whole process."""
    with tempfile.TemporaryDirectory() as tmp:
        output = os.path.join(tmp, "model.keras")
        command = [sys.executable, "-m", "keras_transfer", "train", args.data]
        command += ["--weights", weights, "--output", output]
        command += _shared_options(args)
        if args.quick:
            command += ["--epochs", "1", "--fine-tune-epochs", "1"]
        launch = time.time()
        subprocess.run(command, check=True, capture_output=True)
        total = time.time() - launch
        with open(os.path.join(tmp, "history.json")) as f:
            history = json.load(f)
    return train_breakdown(history, launch, total)


def train_breakdown(history, launch, total):
    """Where the seconds of a `keras-transfer train` process went, from its history.json."""
    timeline, records = history["timeline"], history["epochs"]
    head = history["head_epochs"]
    cache = timeline["cache_pass_seconds"] or 0.0
    # Epoch records count seconds from the start of the fit's cache pass.
    ends = [r["seconds"] for r in records]
    epochs = [ends[0] - cache] + [b - a for a, b in zip(ends, ends[1:])]
    fit = timeline["fit_end"] - timeline["fit_start"]
    score = timeline["score_seconds"] or 0.0
    parts = {
        "start-up (imports, arguments)": timeline["start"] - launch,
        "folder scan and decode check": timeline["data_loaded"] - timeline["start"],
        "model build and compile": timeline["fit_start"] - timeline["data_loaded"],
        "cache pass": cache,
        "head epochs": sum(epochs[:head]),
        "fine-tuning epochs": sum(epochs[head:]),
        "scoring the averaged model": score,
        "rest of fit (its start and end)": fit - cache - sum(epochs) - score,
        "saving": timeline["saved"] - timeline["fit_end"],
        "exit": launch + total - timeline["saved"],
    }
    fine_tune = epochs[head:]
    median = float(np.median(fine_tune)) if fine_tune else None
    return {
        "name": "(t) keras-transfer train",
        "total_seconds": total,
        "parts": parts,
        "outside_fit_seconds": total - fit,
        "epoch_seconds": epochs,
        "fine_tune_epoch_median": median,
        "fine_tune_epoch_max_to_median": max(fine_tune) / median if fine_tune else None,
        "best_val_accuracy": max(r["val_accuracy"] for r in records),
        "final_val_accuracy": records[-1]["val_accuracy"],
        "saved": history.get("saved"),
    }


def report_train_command(results):
    """The lines of (t): its breakdown, and its ratios to (p) and (c)."""
    run, classic, floor = results["t"], results.get("p"), results.get("c")
    total = run["total_seconds"]
    lines = [f"(t) keras-transfer train, whole process: {total:.1f} s"]
    for part, seconds in run["parts"].items():
        lines.append(f"    {part:34} {seconds:7.1f} s  {100 * seconds / total:5.1f}%")
    lines.append(
        "    epochs (s): "
        + ", ".join(f"{s:.1f}" for s in run["epoch_seconds"])
        + f"; fine-tuning median {_s(run['fine_tune_epoch_median'])}, "
        f"max/median {_x(run['fine_tune_epoch_max_to_median'])}"
    )
    saved = (run["saved"] or {}).get("val_accuracy")
    lines.append(
        f"    val_accuracy: saved model {_x(saved)}, best epoch "
        f"{run['best_val_accuracy']:.3f}, last epoch {run['final_val_accuracy']:.3f}"
    )
    ratios = {"outside_fit": run["outside_fit_seconds"] / total}
    checks = [
        f"outside fit <= 10%: {_ok(ratios['outside_fit'], 0.10)}",
        f"fine-tuning epoch <= 1.3x median: {_ok(run['fine_tune_epoch_max_to_median'], 1.3)}",
    ]
    if classic:
        lines.append(
            f"(p) classic, whole process: {classic['total_seconds']:.1f} s, best val_accuracy "
            f"{classic['best_val_accuracy']:.3f}"
        )
        ratios["total_to_classic_process"] = total / classic["total_seconds"]
        checks.append(
            f"whole run <= 1/3.5 of (p): {_ok(ratios['total_to_classic_process'], 1 / 3.5)}"
        )
    if floor:
        ratios["cache_pass_to_inference_pass"] = run["parts"]["cache pass"] / floor["seconds"]
        checks.append(
            f"cache pass <= 1.15x (c): {_ok(ratios['cache_pass_to_inference_pass'], 1.15)}"
        )
    lines.append("targets: " + "; ".join(checks))
    return lines, ratios


def summarize(name, epochs, head_end, total, args):
    seconds = [e["seconds"] for e in epochs]
    per_epoch = [b - a for a, b in zip([0.0] + seconds[:-1], seconds)]
    accuracies = [e.get("val_accuracy", float("nan")) for e in epochs]
    fine_tune = per_epoch[args.head_epochs :]
    return {
        "name": name,
        "epochs": epochs,
        "epoch_seconds": per_epoch,
        "head_phase_seconds": head_end,
        "fine_tune_phase_seconds": total - head_end,
        # The first fine-tuning epoch also re-traces the train function.
        "fine_tune_epoch_seconds": float(np.median(fine_tune)) if fine_tune else None,
        "total_seconds": total,
        "best_val_accuracy": float(np.nanmax(accuracies)),
        "final_val_accuracy": accuracies[-1],
    }


def time_to_reach(result, target):
    for epoch in result["epochs"]:
        if epoch.get("val_accuracy", -1) >= target - 1e-9:
            return epoch["seconds"]
    return None


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def report(results, args):
    floor, classic, ours = (results.get(k) for k in ("c", "a", "b"))
    lines = []
    if floor:
        lines.append(
            f"(c) one inference pass over {floor['images']} images: "
            f"{floor['seconds']:.1f} s ({floor['images_per_second']:.0f} images/s; "
            f"{floor['seconds_decoded_images']:.1f} s on decoded images)"
        )
    target = classic["best_val_accuracy"] if classic else None
    rows = [r for r in (classic, ours) if r]
    for r in rows:
        r["time_to_target_seconds"] = time_to_reach(r, target) if target is not None else None
    header = (
        f"{'recipe':22} {'to target':>9} {'total':>7} {'head':>7} {'fine-t.':>7} "
        f"{'ft/epoch':>8} {'best':>6} {'final':>6}"
    )
    if rows:
        if target is not None:
            lines.append(f"target: (a)'s best validation accuracy, {target:.3f}")
        lines.append(header)
        for r in rows:
            reach = _s(r["time_to_target_seconds"]) if target is not None else "n/a"
            lines.append(
                f"{r['name']:22} {reach:>9} {_s(r['total_seconds']):>7} "
                f"{_s(r['head_phase_seconds']):>7} {_s(r['fine_tune_phase_seconds']):>7} "
                f"{_s(r['fine_tune_epoch_seconds']):>8} {r['best_val_accuracy']:>6.3f} "
                f"{r['final_val_accuracy']:>6.3f}"
            )
        for r in rows:
            lines.append(
                f"{r['name']} seconds per epoch: "
                + ", ".join(f"{s:.1f}" for s in r["epoch_seconds"])
            )
    ratios = {}
    if classic and ours:
        ratios = {
            "time_to_target": ratio(
                ours["time_to_target_seconds"], classic["time_to_target_seconds"]
            ),
            "total": ratio(ours["total_seconds"], classic["total_seconds"]),
            "head_phase": ratio(ours["head_phase_seconds"], classic["head_phase_seconds"]),
            "fine_tune_epoch": ratio(
                ours["fine_tune_epoch_seconds"], classic["fine_tune_epoch_seconds"]
            ),
            "best_val_accuracy": ratio(ours["best_val_accuracy"], classic["best_val_accuracy"]),
        }
        if floor:
            ratios["head_phase_to_inference_pass"] = ratio(
                ours["head_phase_seconds"], floor["seconds"]
            )
        lines.append("ratios (b)/(a): " + ", ".join(f"{k} {_x(v)}" for k, v in ratios.items()))
        lines.append(
            "targets: head phase <= 1.3x inference pass: "
            f"{_ok(ratios.get('head_phase_to_inference_pass'), 1.3)}; time to target "
            f"<= 1/3: {_ok(ratios['time_to_target'], 1 / 3)}; fine-tuning epoch <= 0.4x: "
            f"{_ok(ratios['fine_tune_epoch'], 0.4)}; best accuracy >= (a)'s: "
            f"{'yes' if ours['best_val_accuracy'] >= classic['best_val_accuracy'] else 'no'}"
        )
    print("\n".join(lines))
    return ratios


def _s(value):
    return "never" if value is None else f"{value:.1f}s"


def _x(value):
    return "n/a" if value is None else f"{value:.2f}"


def _ok(value, limit):
    if value is None:
        return "n/a"
    return f"{'yes' if value <= limit else 'no'} ({value:.2f})"


def main(argv=None):
    args = parse_args(argv)
    spec = keras_transfer.get_backbone(args.backbone)
    weights = resolve_weights(args, spec)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.data = quick_subset(args.data, 8, os.path.join(tmp, "flowers"))
        _, _, class_names = load(args)
        results = {}
        runners = {
            "c": lambda: run_floor(args, spec, weights),
            "a": lambda: run_classic(args, spec, weights, len(class_names)),
            "b": lambda: run_transfer(args, spec, weights, len(class_names)),
            "p": lambda: run_classic_process(args),
            "t": lambda: run_train_command(args, weights),
        }
        for key in args.recipes:
            print(f"--- {key}", flush=True)
            results[key] = runners[key]()
        print()
        ratios = report(results, args)
        if "t" in results:
            lines, ratios["train_command"] = report_train_command(results)
            print("\n".join(lines))
    if args.json:
        payload = {
            "arguments": {k: str(v) for k, v in vars(args).items()},
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "keras": keras.__version__,
                "keras_transfer": keras_transfer.__version__,
            },
            "results": results,
            "ratios": ratios,
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2, default=float)


if __name__ == "__main__":
    main()
