"""Benchmark: does the comparison's warm-up make the runs of a backbone start equal?

`keras-transfer compare` trains, per backbone, `scratch`, `head_only` and
`fine_tune` one after the other in one process. Before the warm-up
(`keras_transfer.experiment.warmup`), the first pretrained run paid the
process's first-call costs and the second did not (issue #19). This script
runs, in a fresh process each, the three runs of one backbone (one epoch,
the fine-tuning run's unfreeze placed after it, so that `head_only` and
`fine_tune` are the same recipe):

(a) baseline: no warm-up (the comparison as it was);
(b) with the warm-up before the runs.

Prints each run's setup seconds and first-epoch seconds (wall clock and
process CPU time, which the load of a shared machine disturbs less), and
the ratio of `head_only` (the first pretrained run) to `fine_tune` (the
second): 1.0 is fair.

```
nice -n 10 python benchmarks/compare_warmup.py
python benchmarks/compare_warmup.py --per-class 10 --image-size 64   # smoke run
```

Weights come from `$KERAS_TRANSFER_ASSETS/weights` (default
`../shared/assets/weights` beside the project), the photos from
`$KERAS_TRANSFER_ASSETS/data/flower_photos`.
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

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = pathlib.Path(
    os.environ.get("KERAS_TRANSFER_ASSETS", PROJECT_ROOT.parent / "shared" / "assets")
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2_035")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", choices=("baseline", "warm-up"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    return parser.parse_args()


def child(args):
    """One process: optionally the warm-up, then the three runs; prints JSON."""
    from keras_transfer.backbones import get_backbone
    from keras_transfer.experiment.inputs import ComparisonData
    from keras_transfer.experiment.methods import METHODS
    from keras_transfer.experiment.runs import RunSettings
    from keras_transfer.experiment.runs import train_run
    from keras_transfer.experiment.warmup import warm_up

    data = ComparisonData.from_folder(
        args.data, args.image_size, args.batch_size, 0.2, seed=1337, verbose=False
    )
    settings = RunSettings(
        data,
        shape=(args.image_size, args.image_size, 3),
        epochs=1,
        budget_seconds=None,
        learning_rate=1e-3,
        seed=1337,
        target_accuracy=0.8,
        output_dir=tempfile.mkdtemp(prefix="compare_warmup_"),
    )
    spec = get_backbone(args.backbone)
    figures = {"warmup_seconds": None}
    if args.child == "warm-up":
        figures["warmup_seconds"] = warm_up(spec, settings, {5: 3})
    for method in METHODS:
        cpu = time.process_time()
        run = train_run(spec, method, settings, schedule={5: 3} if method == "fine_tune" else None)
        figures[method] = {
            "setup": run["setup_seconds"],
            "epoch": run["history"][0]["seconds"] - run["setup_seconds"],
            "cpu": time.process_time() - cpu,
            "loss": run["history"][0]["loss"],
        }
    print("FIGURES " + json.dumps(figures))


def main():
    args = parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    from conftest import copy_flower_subset

    with tempfile.TemporaryDirectory() as tmp:
        home = pathlib.Path(tmp, "keras_home", "models")
        home.mkdir(parents=True)
        for f in (ASSETS / "weights").glob("*.h5"):
            (home / f.name).symlink_to(f)
        data = copy_flower_subset(
            ASSETS / "data" / "flower_photos", pathlib.Path(tmp, "data"), args.per_class
        )
        env = dict(os.environ, KERAS_HOME=str(home.parent))
        for mode in ("baseline", "warm-up"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--data",
                    str(data),
                    "--backbone",
                    args.backbone,
                    "--per-class",
                    str(args.per_class),
                    "--image-size",
                    str(args.image_size),
                    "--batch-size",
                    str(args.batch_size),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            line = next(x for x in out.splitlines() if x.startswith("FIGURES "))
            report(mode, json.loads(line[len("FIGURES ") :]))


def report(mode, figures):
    warmup = figures["warmup_seconds"]
    print(f"\n{mode}" + ("" if warmup is None else f" (warm-up {warmup:.1f} s, unclocked)"))
    print(f"  {'run':<10} {'setup s':>8} {'epoch 1 s':>10} {'CPU s':>7}  loss")
    for method in ("scratch", "head_only", "fine_tune"):
        f = figures[method]
        print(
            f"  {method:<10} {f['setup']:>8.2f} {f['epoch']:>10.2f} {f['cpu']:>7.2f}  {f['loss']}"
        )
    head, fine = figures["head_only"], figures["fine_tune"]
    print(
        f"  head_only / fine_tune (same recipe; 1.0 is fair): setup "
        f"{head['setup'] / fine['setup']:.2f}x, setup + epoch 1 "
        f"{(head['setup'] + head['epoch']) / (fine['setup'] + fine['epoch']):.2f}x, "
        f"CPU {head['cpu'] / fine['cpu']:.2f}x"
    )


if __name__ == "__main__":
    main()
