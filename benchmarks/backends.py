"""Benchmark: the flowers recipe of `keras-transfer train` on each Keras backend.

Runs the command line's previous default recipe (MobileNetV2 alpha 0.5 at 224 px, the
real ImageNet weights from `$KERAS_TRANSFER_ASSETS/weights`, 5 epochs of the
head then 5 that also train the last 5 blocks at a tenth of its learning
rate, Adam 1e-3, batch 32, a 20% validation split seeded 1337: the same
`build_classifier` + `ProgressiveUnfreeze` single `fit` that `train` runs) on
every backend of `--backends`, each in its own process (Keras picks its
backend once per process, from `KERAS_BACKEND`). The callbacks of `train`
that write files (history, checkpoints, backup) are left out: they measure
the disk, not the backend.

The photos are decoded once per process, before any clock starts. Per
backend it records and prints:

- whether `fit` used the frozen-feature cache (`feature_cache_info`), the
  cache pass's seconds and images per second (training and validation
  images over its seconds; 0 and none when uncached);
- the seconds of each phase, from the `PhaseTimer` records: the head phase
  (the cache pass included, as PhaseTimer counts it) and each fine-tuning
  phase, with their re-trace seconds and training images per second;
- the whole `fit`'s wall seconds and the process's CPU seconds over it;
- the final (and best) validation accuracy;
- the 1-minute load average before and after the `fit`;

then a markdown table and each backend's ratios to TensorFlow, the baseline
(a ratio above 1 is slower than TensorFlow). A backend whose package is not
installed is named in one line and skipped; one whose run fails is recorded
with its error and the others still run.

```
nice python benchmarks/backends.py                                  # tensorflow,jax
nice python benchmarks/backends.py --backends tensorflow,jax,torch
nice -n 19 python benchmarks/backends.py --backends tensorflow,jax --limit 20 \\
    --image-size 96 --output /tmp/backends-smoke.json               # smoke run
```

Results go to `--output` (default `benchmarks/results/backends.json`),
rewritten after every backend. Times are only comparable within one run on a
quiet machine: the load averages say how quiet it was.
"""

import argparse
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

BENCHMARKS = pathlib.Path(__file__).resolve().parent
PROJECT_ROOT = BENCHMARKS.parent
BASELINE = "tensorflow"
# The Python package each backend needs, and how to install it.
PACKAGES = {
    "tensorflow": ("tensorflow", "pip install -e ."),
    "jax": ("jax", "pip install -e .[jax]"),
    "torch": ("torch", "pip install -e .[torch]"),
}
# The recipe timed on each backend: `keras-transfer train`'s defaults until
# 0.2 (5 + 5 epochs, the last 5 blocks; the default is now 3 + 8 over 8
# blocks, averaged, see defaults.py). Kept fixed so that the figures in
# benchmarks/results/backends.json stay reproducible; the backends are
# compared on it, not the recipes.
HEAD_EPOCHS = 5
FINE_TUNE_EPOCHS = 5
UNFREEZE_BLOCKS = 5
LEARNING_RATE = 1e-3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backends",
        default="tensorflow,jax",
        help=f"comma-separated, of {', '.join(PACKAGES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="folder of one subfolder of photos per class "
        "(default: $KERAS_TRANSFER_ASSETS/data/flower_photos)",
    )
    parser.add_argument("--weights", help="the backbone's weights file (default: from the assets)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--limit", type=int, help="photos per class (smoke runs)")
    parser.add_argument(
        "--output",
        default=str(BENCHMARKS / "results" / "backends.json"),
        help="the JSON results (default: %(default)s)",
    )
    # Internal: run one backend here and write its result to this file.
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in PACKAGES]
    if unknown or not args.backends:
        parser.error(f"--backends: unknown {unknown}; choose among {', '.join(PACKAGES)}")
    return args


# --------------------------------------------------------------- one backend


def measure(args):
    """Trains the recipe on this process's backend; returns the figures.

    Keras is imported here, not at the top: the parent process imports no
    backend at all, and the child's backend is fixed by KERAS_BACKEND before
    its first Keras import.
    """
    # This checkout's package, whatever an installed copy points at.
    sys.path[:0] = [str(PROJECT_ROOT), str(BENCHMARKS)]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    import keras

    import flowers
    import keras_transfer
    from keras_transfer import defaults

    spec = keras_transfer.get_backbone(defaults.BACKBONE)
    args.data = args.data or str(flowers.assets_dir() / "data" / "flower_photos")
    weights = flowers.resolve_weights(args, spec)
    result = {"backend": keras.backend.backend(), "versions": _versions(keras)}
    with tempfile.TemporaryDirectory() as root:
        data = args.data
        if args.limit:
            data = flowers.quick_subset(args.data, args.limit, os.path.join(root, "photos"))
        keras.utils.set_random_seed(defaults.SEED)
        train, val, class_names = keras_transfer.load_image_folder(
            data,
            args.image_size,
            batch_size=defaults.BATCH_SIZE,
            validation_split=defaults.VALIDATION_SPLIT,
            seed=defaults.SEED,
            verbose=False,
        )
        # Fill the datasets' in-memory caches of decoded photos off the clock.
        start = time.perf_counter()
        counts = [sum(len(y) for _, y in ds) for ds in (train, val)]
        result["photos"] = {"train": counts[0], "validation": counts[1]}
        result["decode_seconds"] = time.perf_counter() - start

        model = keras_transfer.build_classifier(
            spec.name,
            len(class_names),
            input_shape=(args.image_size,) * 2 + (3,),
            weights=weights,
            class_names=class_names,
        )
        model.compile(
            keras.optimizers.Adam(LEARNING_RATE),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        log_dir = os.path.join(root, "logs")
        clock = flowers.EpochClock(0.0)
        callbacks = [
            keras_transfer.ProgressiveUnfreeze(
                schedule=keras_transfer.unfreeze.fine_tune_schedule(
                    HEAD_EPOCHS, UNFREEZE_BLOCKS, FINE_TUNE_EPOCHS
                ),
                lr_ratio=defaults.LR_RATIO,
                verbose=0,
            ),
            keras_transfer.PhaseTimer(log_dir),
            clock,
        ]
        result["load_before"] = os.getloadavg()[0]
        cpu = time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clock.start = start = time.perf_counter()
            model.fit(
                train,
                validation_data=val,
                epochs=HEAD_EPOCHS + FINE_TUNE_EPOCHS,
                callbacks=callbacks,
                shuffle=False,
                verbose=0,
            )
            result["fit_seconds"] = time.perf_counter() - start
        result["cpu_seconds"] = time.process_time() - cpu
        result["load_after"] = os.getloadavg()[0]
        # What the run says about itself (e.g. "without the frozen-feature
        # cache"), not the libraries' deprecation notices.
        result["warnings"] = sorted(
            {
                str(w.message).splitlines()[0]
                for w in caught
                if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
            }
        )
        for message in result["warnings"]:
            print(f"    warning: {message}", flush=True)
        result.update(_cache_figures(keras_transfer.caching.feature_cache_info(model)))
        result["phases"] = _phases(os.path.join(log_dir, "phases"))
    result["epochs"] = clock.epochs
    accuracies = [e["val_accuracy"] for e in clock.epochs]
    result["final_val_accuracy"] = accuracies[-1]
    result["best_val_accuracy"] = max(accuracies)
    return result


def _versions(keras):
    """Keras', the backend's and TensorFlow's (tf.data reads the photos) versions."""
    versions = {"keras": keras.__version__}
    for name in {keras.backend.backend(), "tensorflow"}:
        versions[name] = importlib.import_module(PACKAGES[name][0]).__version__
    return versions


def _cache_figures(info):
    if info is None:
        return {"cached": False, "cache_seconds": 0.0, "cache_images_per_second": None}
    images = info.samples * info.views + info.validation_samples
    return {
        "cached": True,
        "cache_seconds": info.seconds,
        "cache_images_per_second": images / info.seconds if info.seconds else None,
        "cache_storage": info.storage,
        "cache_reused": info.reused,
    }


def _phases(run_dir):
    """The per-phase scalars `PhaseTimer` wrote: one dict per phase, in order."""
    # Child only, after Keras (see `measure`).
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    phases = {}
    for tag, key in (
        ("phase/duration_seconds", "seconds"),
        ("phase/retrace_seconds", "retrace_seconds"),
        ("phase/images_per_second", "images_per_second"),
        ("phase/epochs", "epochs"),
    ):
        if tag not in accumulator.Tags()["tensors"]:
            continue
        for event in accumulator.Tensors(tag):
            value = float(tensor_util.make_ndarray(event.tensor_proto))
            phases.setdefault(event.step, {"phase": event.step})[key] = value
    return [phases[step] for step in sorted(phases)]


# ------------------------------------------------------------- all backends


def run_backend(backend, args):
    """Runs `measure` for `backend` in a child process; its result or error."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as folder:
        result_file = os.path.join(folder, "result.json")
        command = [
            sys.executable,
            __file__,
            "--backends",
            backend,
            "--image-size",
            str(args.image_size),
            "--child-result",
            result_file,
        ]
        for option in ("data", "weights", "limit"):
            if getattr(args, option) is not None:
                command += [f"--{option}", str(getattr(args, option))]
        start = time.perf_counter()
        process = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
        if process.returncode != 0 or not os.path.exists(result_file):
            lines = [l for l in process.stderr.splitlines() if l.strip()]
            error = lines[-1] if lines else f"exit status {process.returncode}"
            print(process.stderr[-3000:], file=sys.stderr)
            return {"backend": backend, "error": error}
        result = json.loads(pathlib.Path(result_file).read_text())
    result["process_seconds"] = time.perf_counter() - start
    return result


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def _fine_tuning(result):
    return [p for p in result["phases"] if p["phase"] > 0]


def table(results):
    """The markdown table of the backends' figures, in the order they ran."""
    lines = [
        "| backend | cached | cache pass s (img/s) | head phase s | fine-tuning s | "
        "fit s (CPU s) | final val acc | load before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:60]} | | | | | | |")
            continue
        cache = (
            f"{_fmt(r['cache_seconds'])} ({_fmt(r['cache_images_per_second'], 0)})"
            if r["cached"]
            else "-"
        )
        head = r["phases"][0]["seconds"] if r["phases"] else None
        tuning = " + ".join(_fmt(p["seconds"]) for p in _fine_tuning(r)) or "-"
        lines.append(
            f"| {name} | {'yes' if r['cached'] else 'no'} | {cache} | {_fmt(head)} | "
            f"{tuning} | {_fmt(r['fit_seconds'])} ({_fmt(r['cpu_seconds'], 0)}) | "
            f"{r['final_val_accuracy']:.3f} | {r['load_before']:.1f} -> {r['load_after']:.1f} |"
        )
    return "\n".join(lines)


def ratios(results):
    """Each backend's times over TensorFlow's: {backend: {figure: ratio}}."""
    base = results.get(BASELINE)
    if not base or "error" in base:
        return {}
    out = {}
    for name, r in results.items():
        if name == BASELINE or "error" in r:
            continue
        figures = {
            "fit": _ratio(r["fit_seconds"], base["fit_seconds"]),
            "cpu": _ratio(r["cpu_seconds"], base["cpu_seconds"]),
        }
        if r["phases"] and base["phases"]:
            figures["head phase"] = _ratio(r["phases"][0]["seconds"], base["phases"][0]["seconds"])
        for mine, theirs in zip(_fine_tuning(r), _fine_tuning(base)):
            figures[f"fine-tuning phase {mine['phase']}"] = _ratio(
                mine["seconds"], theirs["seconds"]
            )
        if r["cached"] and base["cached"]:
            figures["cache pass"] = _ratio(r["cache_seconds"], base["cache_seconds"])
        out[name] = figures
    return out


def _ratio(value, base):
    return value / base if base else None


def save(args, results, path):
    payload = {
        "arguments": {k: v for k, v in vars(args).items() if k != "child_result"},
        "recipe": {
            "head_epochs": HEAD_EPOCHS,
            "fine_tune_epochs": FINE_TUNE_EPOCHS,
            "unfreeze_blocks": UNFREEZE_BLOCKS,
            "learning_rate": LEARNING_RATE,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "baseline": BASELINE,
        "results": results,
        "table": table(results),
        "ratios": ratios(results),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def main(argv=None):
    args = parse_args(argv)
    if args.child_result:
        result = measure(args)
        pathlib.Path(args.child_result).write_text(json.dumps(result))
        return
    output = pathlib.Path(args.output)
    results = {}
    for backend in args.backends:
        package, install = PACKAGES[backend]
        if importlib.util.find_spec(package) is None:
            print(f"{backend}: skipped, {package} is not installed ({install}).", flush=True)
            continue
        print(f"--- {backend} (load {os.getloadavg()[0]:.1f})", flush=True)
        r = results[backend] = run_backend(backend, args)
        if "error" in r:
            print(f"    failed: {r['error']}", flush=True)
        else:
            phases = ", ".join(f"phase {p['phase']} {p['seconds']:.1f} s" for p in r["phases"])
            cache = (
                f"cache pass {r['cache_seconds']:.1f} s "
                f"({r['cache_images_per_second']:.0f} images/s)"
                if r["cached"]
                else "uncached"
            )
            print(
                f"    {r['photos']['train']} + {r['photos']['validation']} photos at "
                f"{args.image_size} px; {cache}; {phases}; fit {r['fit_seconds']:.1f} s "
                f"({r['cpu_seconds']:.0f} CPU s); final val accuracy "
                f"{r['final_val_accuracy']:.3f}; load {r['load_before']:.1f} -> "
                f"{r['load_after']:.1f}",
                flush=True,
            )
        save(args, results, output)
    if not results:
        return
    print()
    print(table(results))
    for name, figures in ratios(results).items():
        shown = ", ".join(f"{k} {v:.2f}x" for k, v in figures.items() if v is not None)
        print(f"{name} / {BASELINE}: {shown}")
    print(f"Results: {output}")


if __name__ == "__main__":
    main()
