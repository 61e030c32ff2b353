"""Benchmark: what TensorFlow's converter offers publicly for an int8 LiteRT file, on a trained flowers model.

For a `.keras` file trained on the shared flower photos (`keras-transfer
train`, split 0.2, seed 1337), converts the model with `Model.export(format=
"litert", ...)` and the options of each variant, drops the internal tensor
names as `export_model` does (`keras_transfer.export.tensor_names`), and
measures the file's size against the float32 file (names dropped too) and
its top-1 accuracy on the 500 validation images (`ai_edge_litert`'s
interpreter, raw pixels) against the Keras model's.

The calibration images are a sample of `--calibration-pool` (600) training
images spread evenly over the list (`quantization_images`), of which a
variant takes 200 or all 600, again spread evenly: another sample of 200
than `export_model`'s (which spreads its 200 over all 2,000).

Variants: `int8_200` and `int8_600` (the shipped options:
`TFLITE_BUILTINS_INT8` only, per-channel weights); `int8_fallback` (adds
`TFLITE_BUILTINS`: float kernels allowed where int8 ones are missing);
`int8_oldquant` (`experimental_new_quantizer=False`); `dynamic`,
`float16` for reference.

```
nice python benchmarks/export_int8_variants.py runs/flowers.keras
nice python benchmarks/export_int8_variants.py runs/flowers.keras --variants int8_200,int8_fallback
```
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_transfer.evaluation import load_classifier  # noqa: E402
from keras_transfer.export.quantization import converter_options  # noqa: E402
from keras_transfer.export.quantization import quantization_images  # noqa: E402
from keras_transfer.export.runtimes import run_litert  # noqa: E402
from keras_transfer.export.tensor_names import drop_tensor_names  # noqa: E402

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSETS = os.environ.get("KERAS_TRANSFER_ASSETS", PROJECT_ROOT.parent / "shared" / "assets")
DATA = pathlib.Path(ASSETS) / "data" / "flower_photos"
FALLBACK = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
# name -> (quantize, calibration images, converter options added to the shipped ones)
VARIANTS = {
    "int8_200": ("int8", 200, {}),
    "int8_600": ("int8", 600, {}),
    "int8_fallback": ("int8", 200, {"target_spec": {"supported_ops": FALLBACK}}),
    "int8_oldquant": ("int8", 200, {"experimental_new_quantizer": False}),
    "dynamic": ("dynamic", 0, {}),
    "float16": ("float16", 0, {}),
}


def convert(model, path, quantize, calibration, extra):
    options = converter_options(quantize, calibration)
    options.update(extra)
    model.export(path, format="litert", verbose=False, **options)
    drop_tensor_names(path)
    return os.path.getsize(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras file trained on --data")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calibration-pool", type=int, default=600)
    parser.add_argument("--output", help="a JSON file for the rows (default: print only)")
    args = parser.parse_args(argv)
    model, _ = load_classifier(args.model)
    held = quantization_images(model, args.data, 0.2, 1337, limit=args.calibration_pool)
    expected = model.predict(held.images, verbose=0).argmax(-1)
    keras_accuracy = float(np.mean(expected == held.labels))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        float32 = convert(model, os.path.join(folder, "f32.tflite"), None, None, {})
        for name in args.variants.split(","):
            quantize, count, extra = VARIANTS[name]
            spread = np.linspace(0, len(held.calibration) - 1, count).round().astype(int)
            path = os.path.join(folder, f"{name}.tflite")
            size = convert(model, path, quantize, held.calibration[np.unique(spread)], extra)
            predicted = run_litert(path, held.images).argmax(-1)
            accuracy = float(np.mean(predicted == held.labels))
            rows.append(
                {
                    "variant": name,
                    "bytes": size,
                    "ratio_to_float32": round(size / float32, 4),
                    "accuracy": accuracy,
                    "keras_accuracy": keras_accuracy,
                    "points_vs_keras": round(100 * (accuracy - keras_accuracy), 2),
                    "agreement_with_keras": float(np.mean(predicted == expected)),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    record = {"model": args.model, "images": held.source, "float32_bytes": float32, "rows": rows}
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
