"""Benchmark: which `resize` (stretch, crop, pad) makes the best default, on held-out flowers.

The machinery of `recipes.py`: the same held-out photos (50 per class, fixed
by `--split-seed`, seen by no run), the same training and validation split,
and `keras-transfer train`'s default recipe (`train-default`: 3 head epochs,
then 8 with the last 8 blocks, weights averaged over those 8). Only the
pipeline's `resize` changes, for training, validation and held-out photos
alike, as `keras-transfer train --resize X` then `evaluate` would do. Each
mode runs for each of `--seeds`; the photos are decoded once per mode,
before any clock starts.

The flower photos are mostly landscape, about 3:2 (500x333): `stretch`
squeezes them, `crop` cuts a sixth off each side, `pad` keeps all of them
in two thirds of the square.

```
nice python benchmarks/resize_modes.py --image-size 160 --seeds 1,2,3
python benchmarks/resize_modes.py --limit 20 --image-size 96 --seeds 1 --output /tmp/r.json  # smoke
python benchmarks/resize_modes.py --report      # the table of --output
```

Results go to `--output` (default `benchmarks/results/resize_modes.json`),
rewritten after every run; a run already there is skipped, so an
interrupted benchmark continues where it stopped.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flowers  # noqa: E402
import recipes  # noqa: E402

MODES = ("stretch", "crop", "pad")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(flowers.assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--held-out-per-class", type=int, default=50)
    parser.add_argument("--validation-per-class", type=int, default=50)
    parser.add_argument("--split-seed", type=int, default=1337)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--recipe", default="train-default", help="a recipe of recipes.py")
    parser.add_argument("--limit", type=int, help="photos per class (smoke runs)")
    parser.add_argument(
        "--output",
        default=str(pathlib.Path(__file__).resolve().parent / "results" / "resize_modes.json"),
    )
    parser.add_argument("--report", action="store_true", help="print the table of --output")
    return parser.parse_args(argv)


def load_splits(args, root, resize):
    """`recipes.load_splits`, with every dataset resized by `resize`."""
    run_dir, held_dir, per_class = recipes.split_folders(args, root)
    fraction = min(0.5, args.validation_per_class / per_class)
    train, val, class_names = keras_transfer.load_image_folder(
        run_dir, args.image_size, batch_size=args.batch_size,
        validation_split=fraction, seed=args.split_seed, resize=resize,
    )  # fmt: skip
    held, _, _ = keras_transfer.load_image_folder(
        held_dir, args.image_size, batch_size=args.batch_size, validation_split=0,
        shuffle=False, verbose=False, resize=resize,
    )  # fmt: skip
    counts = [sum(len(y) for _, y in ds) for ds in (train, val, held)]
    return train, val, held, class_names, counts


def table(runs):
    lines = ["resize   seeds  held-out (range)        best val  fit s"]
    for mode in MODES:
        rs = [r for r in runs if r["resize"] == mode]
        if not rs:
            continue
        held = [r["held_out_accuracy"] for r in rs]
        lines.append(
            f"{mode:8} {len(rs):5}  {np.mean(held):.3f} ({min(held):.3f}-{max(held):.3f})"
            f"   {np.mean([r['best_val_accuracy'] for r in rs]):.3f}"
            f"    {np.mean([r['seconds'] for r in rs]):.0f}"
        )
    return lines


def main(argv=None):
    args = parse_args(argv)
    output = pathlib.Path(args.output)
    results = json.loads(output.read_text()) if output.exists() else {"runs": []}
    if args.report:
        print("\n".join(table(results["runs"])))
        return
    recipe = recipes.select(args.recipe)[0]
    spec = keras_transfer.get_backbone(args.backbone)
    args.weights = None
    weights = flowers.resolve_weights(args, spec)
    shape = (args.image_size, args.image_size, 3)
    done = {(r["resize"], r["seed"]) for r in results["runs"]}
    results.update(image_size=args.image_size, recipe=recipe.name, backbone=spec.name)
    for mode in args.modes.split(","):
        seeds = [int(s) for s in args.seeds.split(",") if (mode, int(s)) not in done]
        if not seeds:
            continue
        with tempfile.TemporaryDirectory() as root:
            data = load_splits(args, root, mode)
            print(f"{mode}: {data[4]} photos (train, validation, held-out)", flush=True)
            for seed in seeds:
                result = recipes.run(recipe, data, spec, weights, shape, seed, curves=False)
                result["resize"] = mode
                del result["epochs"]
                results["runs"].append(result)
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(json.dumps(results, indent=1))
                print(f"  seed {seed}: held-out {result['held_out_accuracy']:.3f}, "
                      f"{result['seconds']:.0f} s", flush=True)  # fmt: skip
            keras.backend.clear_session()
    print("\n".join(table(results["runs"])))


if __name__ == "__main__":
    main()
