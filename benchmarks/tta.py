"""Benchmark: what `--tta` (averaging over the mirror image) gains on held-out flowers, and costs.

For each seed: the shared flowers are split per class with that seed into
`--train-per-class` training photos and `--held-out-per-class` held-out
ones; a `mobilenet_v2_050` classifier (`--image-size` px, ImageNet weights)
trains its head for `--epochs` epochs; then `keras_transfer.evaluate` scores
the held-out photos with `tta=True`, which gives the accuracy with TTA and,
the baseline, the same model's accuracy without it (`accuracy_without_tta`).
The time of a plain and of a TTA evaluation of the same photos is measured
too. With `--report-dir`, the first seed's `report.html` is written there
(and `report.png`, its screenshot, when Chromium is installed).

```
nice python benchmarks/tta.py                                   # 3 seeds, ~6 min on 2 cores
python benchmarks/tta.py --seeds 1 --train-per-class 10 --held-out-per-class 10 --output /tmp/t.json  # smoke
```

Results go to `--output` (default `benchmarks/results/tta.json`).
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.evaluation.report import write_report  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flowers  # noqa: E402

WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(flowers.assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--held-out-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--report-dir", help="write the first seed's report.html here")
    parser.add_argument("--output", default="benchmarks/results/tta.json")
    return parser.parse_args(argv)


def split(data, root, seed, train_per_class, held_out_per_class):
    """Symlinked train/ and held_out/ folders, disjoint, drawn per class with `seed`."""
    for name in sorted(os.listdir(data)):
        if not os.path.isdir(os.path.join(data, name)):
            continue
        files = sorted(os.listdir(os.path.join(data, name)))
        random.Random(f"{seed}-{name}").shuffle(files)
        parts = {
            "train": files[:train_per_class],
            "held_out": files[train_per_class : train_per_class + held_out_per_class],
        }
        for part, chosen in parts.items():
            os.makedirs(root / part / name, exist_ok=True)
            for f in chosen:
                os.symlink(os.path.join(data, name, f), root / part / name / f)
    return root / "train", root / "held_out"


def run(args, seed, root):
    keras.utils.set_random_seed(seed)
    train_dir, held_dir = split(
        args.data, root, seed, args.train_per_class, args.held_out_per_class
    )
    size = args.image_size
    train_ds, _, names = keras_transfer.load_image_folder(
        train_dir, size, validation_split=0, seed=seed, verbose=False
    )
    held_ds, _, _ = keras_transfer.load_image_folder(
        held_dir, size, validation_split=0, shuffle=False, verbose=False, cache=True
    )
    weights = pathlib.Path(args.data).parents[1] / "weights" / WEIGHTS
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050", len(names), input_shape=(size, size, 3),
        weights=str(weights), class_names=names,
    )  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, epochs=args.epochs, verbose=0)
    # Warm-up, untimed: every photo decoded into the dataset's cache, the
    # prediction traced; the timings below are then the model's alone.
    keras_transfer.evaluate(model, held_ds)
    start = time.perf_counter()
    plain = keras_transfer.evaluate(model, held_ds)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    tta = keras_transfer.evaluate(model, held_ds, tta=True)
    tta_s = time.perf_counter() - start
    assert abs(tta.accuracy_without_tta - plain.accuracy) < 1e-9
    if args.report_dir and seed == int(args.seeds.split(",")[0]):
        write_report_files(args.report_dir, tta, held_ds.file_paths, model, size)
    return {
        "seed": seed,
        "accuracy_without_tta": plain.accuracy,
        "accuracy_with_tta": tta.accuracy,
        "gain": tta.accuracy - plain.accuracy,
        "held_out_images": plain.num_images,
        "evaluate_s": round(plain_s, 2),
        "evaluate_tta_s": round(tta_s, 2),
    }


def write_report_files(folder, evaluation, file_paths, model, size):
    os.makedirs(folder, exist_ok=True)
    page = os.path.join(folder, "report.html")
    write_report(page, evaluation, file_paths, model, (size, size), "crop", limit=12)
    chromium = shutil.which("chromium")
    if chromium:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             f"--screenshot={os.path.join(folder, 'report.png')}", "--window-size=1100,2400",
             pathlib.Path(page).resolve().as_uri()],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    print(f"Wrote {page}")


def main(argv=None):
    args = parse_args(argv)
    results = []
    for seed in map(int, args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args, seed, pathlib.Path(tmp))
        results.append(result)
        print(json.dumps(result))
    gains = [r["gain"] for r in results]
    summary = {
        "baseline": "the same model without TTA (accuracy_without_tta)",
        "mean_accuracy_without_tta": float(np.mean([r["accuracy_without_tta"] for r in results])),
        "mean_accuracy_with_tta": float(np.mean([r["accuracy_with_tta"] for r in results])),
        "mean_gain": float(np.mean(gains)),
        "time_ratio_tta_vs_plain": float(
            np.mean([r["evaluate_tta_s"] / r["evaluate_s"] for r in results])
        ),
    }
    print(json.dumps(summary, indent=1))
    payload = {"args": vars(args), "runs": results, "summary": summary}
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
