"""What a `TransferHyperModel` trial costs besides training: backbone reuse, shared features.

Runs the same small `RandomSearch` three times, each in a fresh process:

- rebuild: `reuse_backbones=False, share_frozen_features=False`, what a
  plain KerasTuner HyperModel does: every trial builds the backbone, loads
  its weights and runs it over every image for its feature cache;
- reuse: `reuse_backbones=True` (the backbone is built and its ImageNet
  weights loaded once per process, then reset with `set_weights`), each
  trial still computing its own feature cache;
- share: both defaults, `reuse_backbones=True, share_frozen_features=True`:
  a trial whose frozen layers (unfreeze depth) and data an earlier trial
  already had reuses its cached features.

The search space has 4 depths x 2 head widths, so that in 8 trials each
depth comes about twice. Per trial it times:

- build: `TransferHyperModel.build` (backbone, head, compile);
- try_build: KerasTuner's `_try_build` around it (`clear_session`,
  `gc.collect`, the build);
- cache: computing (or finding in the store) the frozen-feature cache of
  the trial's `fit` (`keras_transfer.caching.feature_cache_info(model)`;
  the trial-by-trial table marks reused caches with `*`);
- epochs: time inside the epochs (first batch, with tracing, included);
- trial: the whole trial (`run_trial`: build, fit, KerasTuner's
  checkpointing);
- overhead: trial - epochs, what the trial costs besides its epochs.

Usage:

    python benchmarks/tuner_trial_overhead.py --trials 8      # as in the README
    python benchmarks/tuner_trial_overhead.py                 # 5 trials, 128 px
    python benchmarks/tuner_trial_overhead.py --trials 3 --image-size 96

Weights and photos come from `$KERAS_TRANSFER_ASSETS` (default
`../shared/assets`); the ImageNet weights are linked into a temporary
`KERAS_HOME`.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = pathlib.Path(os.environ.get("KERAS_TRANSFER_ASSETS", ROOT.parent / "shared" / "assets"))
COLUMNS = ("build", "try_build", "cache", "epochs", "trial", "overhead")
MODES = ("rebuild", "reuse", "share")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2_050")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images-per-class", type=int, default=8)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_mode(args):
    import keras
    import keras_tuner

    import keras_transfer

    with tempfile.TemporaryDirectory() as scratch:
        data = pathlib.Path(scratch) / "data"
        for name in ("daisy", "dandelion", "roses", "sunflowers", "tulips"):
            (data / name).mkdir(parents=True)
            photos = sorted((ASSETS / "data" / "flower_photos" / name).glob("*.jpg"))
            for photo in photos[: args.images_per_class]:
                os.symlink(photo, data / name / photo.name)
        size = args.image_size
        train_ds, val_ds, classes = keras_transfer.load_image_folder(
            data, image_size=size, batch_size=8, verbose=False
        )
        hypermodel = keras_transfer.TransferHyperModel(
            num_classes=len(classes),
            backbones=(args.backbone,),
            input_shape=(size, size, 3),
            unfreeze_blocks=(1, 2, 3, 4),
            unfreeze_epoch=1,
            head_units=(0, 32),
            head_dropout=0.2,
            head_learning_rate=1e-3,
            backbone_lr_ratio=0.1,
            reuse_backbones=args.mode != "rebuild",
            share_frozen_features=args.mode == "share",
        )
        records = []

        class EpochClock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.seconds = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds += time.perf_counter() - self.start

        build, fit = hypermodel.build, hypermodel.fit

        def timed_build(hp):
            start = time.perf_counter()
            model = build(hp)
            records[-1]["build"] = time.perf_counter() - start
            return model

        def timed_fit(hp, model, *a, **kw):
            clock = EpochClock()
            kw["callbacks"] = list(kw.get("callbacks", [])) + [clock]
            history = fit(hp, model, *a, **kw)
            info = keras_transfer.caching.feature_cache_info(model)
            records[-1]["cache"] = info.seconds if info else 0.0
            records[-1]["reused"] = bool(info and info.reused)
            records[-1]["epochs"] = clock.seconds
            return history

        class Timed(keras_tuner.RandomSearch):
            def _try_build(self, hp):
                start = time.perf_counter()
                model = super()._try_build(hp)
                records[-1]["try_build"] = time.perf_counter() - start
                return model

            def run_trial(self, trial, *a, **kw):
                records.append({})
                start = time.perf_counter()
                result = super().run_trial(trial, *a, **kw)
                records[-1]["trial"] = time.perf_counter() - start
                records[-1]["overhead"] = records[-1]["trial"] - records[-1]["epochs"]
                return result

        records.append({})  # The tuner's own build, before the first trial.
        hypermodel.build = timed_build
        hypermodel.fit = timed_fit
        start = time.perf_counter()
        tuner = Timed(
            hypermodel,
            objective="val_accuracy",
            max_trials=args.trials,
            directory=pathlib.Path(scratch) / "search",
            seed=0,
        )
        setup = {"tuner_init": time.perf_counter() - start, **records.pop()}
        tuner.search(train_ds, validation_data=val_ds, epochs=args.epochs, verbose=0)
    return {"setup": setup, "trials": records}


def main(argv=None):
    args = parse_args(argv)
    if args.mode:
        result = run_mode(args)
        pathlib.Path(args.output).write_text(json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory() as home:
        models = pathlib.Path(home) / "models"
        models.mkdir()
        for weights in (ASSETS / "weights").glob("*.h5"):
            os.symlink(weights, models / weights.name)
        env = dict(os.environ, KERAS_HOME=home)
        for mode in MODES:
            output = pathlib.Path(home) / f"{mode}.json"
            command = [
                sys.executable,
                __file__,
                *(argv or sys.argv[1:]),
                "--mode",
                mode,
                "--output",
                str(output),
            ]
            subprocess.run(command, env=env, check=True)
            results[mode] = json.loads(output.read_text())
    print(
        f"\n{args.backbone} at {args.image_size} px, {args.images_per_class * 5} "
        f"images, {args.trials} trials of {args.epochs} epochs; seconds, median "
        "over trials (min-max):"
    )
    print(f"{'':10}" + "".join(f"{c:>20}" for c in COLUMNS))
    for mode, result in results.items():
        cells = []
        for column in COLUMNS:
            values = [t[column] for t in result["trials"]]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{mode:10}" + "".join(f"{c:>20}" for c in cells))
    for mode, result in results.items():
        print(f"{mode}, trial by trial:")
        for index, trial in enumerate(result["trials"]):
            print(
                f"  {index:<8}"
                + "".join(
                    f"{trial[c]:>19.2f}" + ("*" if c == "cache" and trial["reused"] else " ")
                    for c in COLUMNS
                )
            )
    for mode, result in results.items():
        print(
            f"{mode}: tuner construction {result['setup']['tuner_init']:.2f} s "
            f"(first build {result['setup'].get('build', 0):.2f} s)"
        )


if __name__ == "__main__":
    main()
