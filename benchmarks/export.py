"""Benchmark: each export format and LiteRT quantization of the flowers model: size, accuracy, latency.

1. Trains the default flowers model with `keras-transfer train` on the
   shared flower photos (2,500: 2,000 training, 500 validation, split 0.2,
   seed 1337), with the train defaults (MobileNetV2 0.5, 224 px, crop;
   3 epochs of the head, 8 fine-tuning the top 8 blocks, the weights
   averaged over the fine-tuning epochs); `--head-only` passes
   `--fine-tune-epochs 0` instead (the head alone: the model of the first
   measurements). `--model` reuses a trained file.
2. Exports it with `keras_transfer.export_model`: SavedModel, ONNX, LiteRT
   float32, float16, dynamic and int8 (int8 calibrated on 200 training
   images), each quantized file scored on the validation split as `train`
   made it. Each LiteRT file is also converted as the converter writes it
   (`Model.export`, the same options), before its internal tensor names
   are dropped (`keras_transfer.export.tensor_names`): its size, and
   whether the kept file's outputs on the 500 images are bit for bit the
   same, go in the row.
3. For each artifact and the Keras model: the file size, the top-1
   accuracy on the 500 validation images (run by its own runtime on raw
   pixels) and the latency per image, batch 1, one thread (LiteRT
   `num_threads=1`, ONNX Runtime `intra_op_num_threads=1`, TensorFlow
   intra- and inter-op threads 1 for Keras' `predict_on_batch` and the
   SavedModel): the median of 30 calls after 5 warm-up calls, in 3
   rounds over all the artifacts in turn, the lowest of the 3 medians kept
   (the machine is shared: a round that another process slowed is left out).

Prints a table and the ratios against the float32 LiteRT file, and writes
`benchmarks/results/export.json`.

```
nice python benchmarks/export.py                          # trains, then measures
nice python benchmarks/export.py --workdir runs/export    # keeps the model and files
nice python benchmarks/export.py --model flowers.keras    # measures a trained model
nice python benchmarks/export.py --head-only --output benchmarks/results/export_head_only.json
```
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# One thread, before TensorFlow starts its runtime: the latency is per core.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras_transfer  # noqa: E402
from keras_transfer.evaluation import load_classifier  # noqa: E402
from keras_transfer.export import runtimes  # noqa: E402
from keras_transfer.export.quantization import converter_options  # noqa: E402
from keras_transfer.export.quantization import quantization_images  # noqa: E402

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS_ENV = "KERAS_TRANSFER_ASSETS"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
SPLIT, SEED = 0.2, 1337
# (name, format, quantize, file name)
EXPORTS = [
    ("SavedModel", "saved_model", None, "flowers_saved_model"),
    ("ONNX", "onnx", None, "flowers.onnx"),
    ("LiteRT float32", "litert", None, "flowers.tflite"),
    ("LiteRT float16", "litert", "float16", "flowers_float16.tflite"),
    ("LiteRT dynamic", "litert", "dynamic", "flowers_dynamic.tflite"),
    ("LiteRT int8", "litert", "int8", "flowers_int8.tflite"),
]
WARMUP, CALLS, ROUNDS = 5, 30, 3


def assets_dir():
    return pathlib.Path(os.environ.get(ASSETS_ENV, PROJECT_ROOT.parent / "shared" / "assets"))


def train(workdir, data, head_only=False):
    """Trains the flowers model with the CLI (all threads, its own process); returns its path."""
    output = os.path.join(workdir, "flowers.keras")
    weights = str(assets_dir() / "weights" / WEIGHTS)
    command = [sys.executable, "-m", "keras_transfer", "train", str(data), "--output", output,
               "--weights", weights] + ["--fine-tune-epochs", "0"] * head_only  # fmt: skip
    print(" ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    return output


def size_of(path):
    if os.path.isdir(path):
        return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())
    return os.path.getsize(path)


def latency(call, image):
    """Median seconds of `call(image)` over `CALLS` calls, after `WARMUP`."""
    for _ in range(WARMUP):
        call(image)
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def litert_call(path):
    interpreter = runtimes.litert_interpreter(path, threads=1)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], (1, *source["shape"][1:]))
    interpreter.allocate_tensors()

    def call(image):
        interpreter.set_tensor(source["index"], image)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    return call


def onnx_call(path):
    session = runtimes.onnx_session(path, threads=1)
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})[0]


def saved_model_call(path):
    loaded = tf.saved_model.load(path)
    return lambda image: loaded.serve(tf.constant(image)).numpy()


CALLS_BY_FORMAT = {"litert": litert_call, "onnx": onnx_call, "saved_model": saved_model_call}
RUN_BY_FORMAT = {
    "litert": lambda p, x: runtimes.run_litert(p, x, threads=1),
    "onnx": lambda p, x: runtimes.run_onnx(p, x, threads=1),
    "saved_model": runtimes.run_saved_model,
}


def measure(model, model_path, workdir, data):
    held = quantization_images(model, data, SPLIT, SEED)
    labels, images = held.labels, held.images
    image = images[:1]
    start = time.perf_counter()
    keras_outputs = model.predict(images, batch_size=32, verbose=0)
    rows = [
        {
            "name": "Keras (.keras)",
            "bytes": os.path.getsize(model_path),
            "accuracy": float(np.mean(np.argmax(keras_outputs, -1) == labels)),
        }
    ]
    calls = [model.predict_on_batch]
    print(f"Keras: {time.perf_counter() - start:.0f} s", flush=True)
    for name, format, quantize, file in EXPORTS:
        start = time.perf_counter()
        path = os.path.join(workdir, file)
        quantized = {}
        if quantize:
            quantized = dict(calibration_data=str(data), validation_split=SPLIT, seed=SEED)
        result = keras_transfer.export_model(
            model, path, format=format, quantize=quantize, **quantized
        )
        outputs = RUN_BY_FORMAT[format](path, images)
        row = {
            "name": name,
            "format": format,
            "quantize": quantize,
            "bytes": size_of(path),
            "accuracy": float(np.mean(np.argmax(outputs, -1) == labels)),
            "agreement_with_keras": float(
                np.mean(np.argmax(outputs, -1) == np.argmax(keras_outputs, -1))
            ),
        }
        if result.score is not None:
            row["export_score"] = result.score.summary()
        if format == "litert":
            row.update(as_converted(model, path, quantize, held, outputs))
        rows.append(row)
        calls.append(CALLS_BY_FORMAT[format](path))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    medians = [[latency(call, image) for call in calls] for _ in range(ROUNDS)]
    for row, times in zip(rows, zip(*medians)):
        row["latency_ms"] = 1000 * min(times)
        row["latency_ms_rounds"] = [1000 * t for t in times]
    return rows, held.source


def as_converted(model, path, quantize, held, outputs):
    """The size of the converter's own file (names kept), and whether `outputs` are bit for bit its."""
    converted = path.replace(".tflite", "_as_converted.tflite")
    options = converter_options(quantize, held.calibration if quantize else None)
    model.export(converted, format="litert", verbose=False, **options)
    same = bool(np.array_equal(runtimes.run_litert(converted, held.images, threads=1), outputs))
    return {"bytes_as_converted": os.path.getsize(converted), "same_outputs_as_converted": same}


def table(rows):
    float32 = next(r for r in rows if r["name"] == "LiteRT float32")
    keras_accuracy = rows[0]["accuracy"]
    lines = [
        "| artifact | size | size / LiteRT float32 | accuracy | vs Keras | latency (1 thread) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['bytes'] / 1e6:.2f} MB | {r['bytes'] / float32['bytes']:.2f}x "
            f"| {100 * r['accuracy']:.1f}% | {100 * (r['accuracy'] - keras_accuracy):+.1f} "
            f"| {r['latency_ms']:.1f} ms |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained flowers .keras file (default: train one)")
    parser.add_argument("--data", default=str(assets_dir() / "data" / "flower_photos"))
    parser.add_argument("--head-only", action="store_true", help="train with --fine-tune-epochs 0")
    parser.add_argument(
        "--workdir", help="where the model and exports go (default: a temporary folder)"
    )
    parser.add_argument(
        "--output", default=str(PROJECT_ROOT / "benchmarks" / "results" / "export.json")
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or temporary
        os.makedirs(workdir, exist_ok=True)
        model_path = args.model or train(workdir, args.data, args.head_only)
        model, _ = load_classifier(model_path)
        rows, source = measure(model, model_path, workdir, args.data)
    lines = table(rows)
    print("\n".join(lines))
    record = {
        "model": args.model
        or "MobileNetV2 0.5, 224 px, crop; "
        + (
            "head trained 3 epochs (train defaults, --fine-tune-epochs 0)"
            if args.head_only
            else "train defaults (3 epochs of the head, 8 fine-tuning, averaged)"
        ),
        "images": source,
        "latency": f"batch 1, one thread, median of {CALLS} calls after {WARMUP}, "
        f"lowest of {ROUNDS} rounds",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "tensorflow": tf.__version__,
        "rows": rows,
        "table": lines,
    }
    pathlib.Path(args.output).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
